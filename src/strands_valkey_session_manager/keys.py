"""Key layout: where every record of a session lives in Valkey.

This module is the one place a key is built. With the default prefix and a standalone client::

    session:<session_id>                                        the session record (JSON)
    session:<session_id>:index                                  SET of the session's member suffixes
    session:<session_id>:agent:<agent_id>                       one agent's state (JSON)
    session:<session_id>:agent:<agent_id>:messages              ZSET of the agent's message ids
    session:<session_id>:agent:<agent_id>:message:<message_id>  one message (JSON)
    session:<session_id>:multi_agent:<multi_agent_id>           a Swarm/Graph's state (JSON)
    session:<session_id>:lock:<member suffix>                   the session lock's lease on one member
                                                                (only with lock_timeout; see lock.py)

With a cluster client the session id is wrapped in a hash tag (``session:{<session_id>}...``) so
that every key of a session hashes to one slot and a script may touch all of them atomically.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Characters that would let one id reach another's keys (":"), break hash tags ("{", "}") or
# break raw inspection patterns (glob characters).
_FORBIDDEN = frozenset(":{}*?[]")
# Unicode categories never allowed: control characters (Cc), and lone surrogates (Cs), which a
# Python str may hold but UTF-8, and so a Valkey key, cannot.
_FORBIDDEN_CATEGORIES = frozenset(("Cc", "Cs"))

INDEX = "index"
AGENT = "agent"
MESSAGES = "messages"
MESSAGE = "message"
MULTI_AGENT = "multi_agent"
LOCK = "lock"


def validate_id(value: object, kind: str) -> str:
    """Return ``value`` if it is a usable id, else raise ``ValueError`` naming what is wrong.

    Args:
        value: The id to check.
        kind: What the id names (``session_id``, ``agent_id``, ...), used in the error message.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind}=<{value!r}> | must be a non-empty string")
    char = _forbidden_char(value)
    if char is not None:
        raise ValueError(
            f"{kind}=<{value!r}> | must not contain {char!r}: ids may not contain ':', '{{', '}}', "
            "glob characters (*?[]), whitespace, control characters or lone surrogates"
        )
    return value


@lru_cache(maxsize=1024)
def _forbidden_char(value: str) -> str | None:
    """Return the first character of ``value`` that an id may not contain, or ``None``.

    Every key built checks its ids, several times per append; remembering the answer for recent ids
    keeps that from costing a Unicode lookup per character each time.
    """
    for char in value:
        if char in _FORBIDDEN or char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return char
    return None


def validate_message_id(value: object) -> int:
    """Return ``value`` if it is an integer message id (``bool`` excluded), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"message_id=<{value!r}> | message id must be an integer")
    return value


def validate_prefix(value: object) -> str:
    """Return ``value`` if it is a usable key prefix; ``:`` is allowed (``tenant-a:session``)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"key_prefix=<{value!r}> | must be a non-empty string")
    for char in value:
        if char in "{}*?[]" or char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"key_prefix=<{value!r}> | must not contain {char!r}")
    return value


@dataclass(frozen=True)
class KeySchema:
    """Builds the keys of sessions under one prefix, for a standalone or a cluster client."""

    prefix: str = "session"
    cluster: bool = False

    def __post_init__(self) -> None:
        """Validate the prefix once, so every key built from it is well formed."""
        validate_prefix(self.prefix)

    def session(self, session_id: str) -> str:
        """Key of the session record; every other key of the session starts with it plus ``:``."""
        session_id = validate_id(session_id, "session_id")
        return f"{self.prefix}:{{{session_id}}}" if self.cluster else f"{self.prefix}:{session_id}"

    def member(self, session_id: str, suffix: str) -> str:
        """Key of a member of the session, from its suffix as stored in the session index."""
        return f"{self.session(session_id)}:{suffix}"

    def index(self, session_id: str) -> str:
        """Key of the SET that lists the session's members (agents, multi-agents, locks)."""
        return self.member(session_id, INDEX)

    @staticmethod
    def agent_suffix(agent_id: str) -> str:
        """Suffix of an agent's key below the session key, as stored in the session index."""
        return f"{AGENT}:{validate_id(agent_id, 'agent_id')}"

    @staticmethod
    def multi_agent_suffix(multi_agent_id: str) -> str:
        """Suffix of a multi-agent's key below the session key, as stored in the session index."""
        return f"{MULTI_AGENT}:{validate_id(multi_agent_id, 'multi_agent_id')}"

    def agent(self, session_id: str, agent_id: str) -> str:
        """Key of one agent's state."""
        return self.member(session_id, self.agent_suffix(agent_id))

    def messages(self, session_id: str, agent_id: str) -> str:
        """Key of the ZSET of one agent's message ids (score = id)."""
        return f"{self.agent(session_id, agent_id)}:{MESSAGES}"

    def message_prefix(self, session_id: str, agent_id: str) -> str:
        """Everything of a message key but its id; scripts append the id to it."""
        return f"{self.agent(session_id, agent_id)}:{MESSAGE}:"

    def message(self, session_id: str, agent_id: str, message_id: int) -> str:
        """Key of one message."""
        return f"{self.message_prefix(session_id, agent_id)}{validate_message_id(message_id)}"

    def multi_agent(self, session_id: str, multi_agent_id: str) -> str:
        """Key of a Swarm's or Graph's state."""
        return self.member(session_id, self.multi_agent_suffix(multi_agent_id))

    def lock(self, session_id: str, suffix: str) -> str:
        """Key of the lock on one member (``agent:<id>``, ``multi_agent:<id>``); not listed in the index.

        lua/common.lua ``each_key`` derives the same name from each index member, for ``delete_session``.
        """
        return self.member(session_id, f"{LOCK}:{suffix}")
