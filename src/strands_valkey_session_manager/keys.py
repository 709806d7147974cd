"""Key layout: the one place a session's keys are built, and read back (a key to its session and member).

The layout is drawn in ``ValkeySessionManager``'s docstring. With a cluster client the session id is wrapped
in a hash tag (``session:{<session_id>}...``) so that every key of a session hashes to one slot.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Characters that would let one id reach another's keys (":"), break hash tags ("{", "}"), break raw
# inspection patterns (glob characters and the glob escape "\\") or keep a session from moving to the
# SDK's File and S3 managers, which refuse path separators ("/").
_FORBIDDEN = frozenset(":{}*?[]\\/")
_FORBIDDEN_IN_PREFIX = frozenset("{}*?[]\\")
# Unicode categories never allowed: control characters (Cc), and lone surrogates (Cs), which a
# Python str may hold but UTF-8, and so a Valkey key, cannot.
_FORBIDDEN_CATEGORIES = frozenset(("Cc", "Cs"))

INDEX = "index"
AGENT = "agent"
MESSAGES = "messages"
MESSAGE = "message"
MULTI_AGENT = "multi_agent"
LOCK = "lock"
OWNER = "owner"
TITLES = "titles"


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
            f"{kind}=<{value!r}> | must not contain {char!r}: ids may not contain ':', '{{', '}}', glob "
            "characters and their escape (*?[]\\), '/', whitespace, control characters or lone surrogates"
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
        if char in _FORBIDDEN_IN_PREFIX or char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
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

    def message_keys(self, session_id: str, agent_id: str, message_ids: list[int]) -> list[str]:
        """Keys of many messages of one agent (a restore's MGET), ids checked once by their caller."""
        prefix = self.message_prefix(session_id, agent_id)
        return [f"{prefix}{message_id}" for message_id in message_ids]

    def lock(self, session_id: str, suffix: str) -> str:
        """Key of the lock on one member (``agent:<id>``, ``multi_agent:<id>``); not listed in the index.

        lua/session.lua ``walk`` derives the same name from each index member, for ``delete_session``.
        """
        return self.member(session_id, f"{LOCK}:{suffix}")

    def every_key(self, session_id: str, agents: dict[str, list[int]], multi_agents: list[str]) -> list[str]:
        """Every key of a session whose index lists these agents (with their message ids) and multi-agents.

        The record, the index, each member and its lock key, each agent's id ZSET and messages: the keys
        lua/session.lua ``walk`` derives on the server, for a delete made with plain commands.
        """
        keys = [self.session(session_id), self.index(session_id)]
        for agent_id, message_ids in agents.items():
            suffix = self.agent_suffix(agent_id)
            keys += (
                self.member(session_id, suffix),
                self.lock(session_id, suffix),
                self.messages(session_id, agent_id),
            )
            keys += self.message_keys(session_id, agent_id, message_ids)
        for multi_agent_id in multi_agents:
            suffix = self.multi_agent_suffix(multi_agent_id)
            keys += (self.member(session_id, suffix), self.lock(session_id, suffix))
        return keys

    # -- an owner's bookkeeping (directory.py) ---------------------------------------------------

    def owner(self, owner: str) -> str:
        """Key of the ZSET of an owner's session ids, scored by last use (ms on the server's clock).

        ``<prefix>:owner{<owner>}``: no key of any session, whatever the prefixes. A session key is
        ``<prefix>:<id>`` (``<prefix>:{<id>}`` on a cluster) or begins so with ``:`` after it; neither ids nor
        prefixes may hold ``{``, so the ``{`` after ``owner`` can start no session id and end no prefix
        (``parse`` reads it as no key of this layout). The braces are the hash tag on a cluster: an owner's
        keys share one slot, each owner its own. An owner is checked as an id is (no ``:``, braces, ...).
        """
        return f"{self.prefix}:{OWNER}{{{validate_id(owner, 'owner')}}}"

    def owner_titles(self, owner: str) -> str:
        """Key of the HASH of an owner's session titles (session id -> title), beside (and in the slot of) ``owner``."""
        return f"{self.owner(owner)}:{TITLES}"

    # -- reading keys back -------------------------------------------------------------------

    def session_pattern(self, match: str = "*") -> str:
        """SCAN ``MATCH`` pattern of the session record keys whose session id matches the glob ``match``."""
        return f"{self.prefix}:{{{match}}}" if self.cluster else f"{self.prefix}:{match}"

    def parse(self, key: str) -> ParsedKey | None:
        """Read a key back: its session and what it holds there; ``None`` if it is no key of this layout."""
        head = f"{self.prefix}:"
        if not key.startswith(head):
            return None
        session_part, _, suffix = key[len(head) :].partition(":")
        if self.cluster:
            if not (session_part.startswith("{") and session_part.endswith("}")):
                return None
            session_part = session_part[1:-1]
        if not session_part or _forbidden_char(session_part) is not None:
            return None
        if not suffix:
            return ParsedKey(session_part, SESSION)
        parsed = parse_suffix(suffix)
        return None if parsed is None else ParsedKey(session_part, *parsed)


#: What a session record key holds (``ParsedKey.kind``); the other kinds are the suffixes' first words.
SESSION = "session"


@dataclass(frozen=True)
class ParsedKey:
    """A key of a session, read back: the session, what the key holds, and whose it is."""

    session_id: str
    kind: str  # SESSION, INDEX, AGENT, MESSAGES, MESSAGE, MULTI_AGENT or LOCK
    member_id: str = ""  # the agent or multi-agent id ('' for the session record and index)
    message_id: int | None = None  # MESSAGE only
    locked: str = ""  # LOCK only: the suffix of the member it locks


def parse_suffix(suffix: str) -> tuple[str, str, int | None, str] | None:
    """Read a member suffix (``agent:<id>``, ``agent:<id>:message:<n>``, ...): (kind, member id, message id, locked)."""
    parts = suffix.split(":")
    if parts == [INDEX]:
        return INDEX, "", None, ""
    if len(parts) < 2 or not parts[-1] or _forbidden_char(parts[1 if parts[0] != LOCK else -1]) is not None:
        return None
    if parts[0] == LOCK and len(parts) == 3 and parts[1] in (AGENT, MULTI_AGENT):
        return LOCK, parts[2], None, f"{parts[1]}:{parts[2]}"
    if len(parts) == 2 and parts[0] in (AGENT, MULTI_AGENT):
        return parts[0], parts[1], None, ""
    if parts[0] != AGENT:
        return None
    if parts[2:] == [MESSAGES]:
        return MESSAGES, parts[1], None, ""
    if len(parts) == 4 and parts[2] == MESSAGE and parts[3].isdecimal() and parts[3].isascii():
        return MESSAGE, parts[1], int(parts[3]), ""
    return None
