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

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from valkey.crc import key_slot

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


# -- ValkeyStorage (strands.storage.Storage) -------------------------------------------------------------------------
#
# A storage key (``session/<id>/scopes/agent/<id>/snapshots/snapshot_latest.json``) belongs to a group: its first two
# '/'-separated segments (the whole key if it has at most two). A group's keys share one deadline and, on a cluster,
# one slot. With the default prefix and a standalone client::
#
#     strands:<key>                     the value (bytes)
#     strands:<group>/                  ZSET of the group's keys, all scores 0: the group's index
#     strands://groups                  ZSET of every group, all scores 0: the registry, for prefixes above a group
#     strands://deadlines               ZSET of every group scored by its deadline (ms; +inf = none)
#
# With a cluster client the group is the hash tag (``strands:{session/abc}/scopes/...``, index
# ``strands:{session/abc}/``) and each slot has its own registry (``strands:{<tag of the slot>}//groups``), so that a
# group and its registry entry change in one atomic script. No storage key starts or ends with '/', so none of these
# names can collide. '%', '{' and '}' in storage keys are percent-escaped in Valkey key names (and index members):
# braces would break hash tags. Escaping keeps prefixes: a key starts with a prefix exactly when its escaped form
# starts with the escaped prefix.

_ESCAPES: dict[str, str | int | None] = {"%": "%25", "{": "%7B", "}": "%7D"}
_ESCAPE = str.maketrans(_ESCAPES)
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(re.escape(str(code)) for code in _UNESCAPES))
SLOTS = 16384


def escape_storage_key(key: str) -> str:
    """Return a storage key (or prefix, or group) as it appears in Valkey key names and index members."""
    return key.translate(_ESCAPE) if any(char in key for char in _ESCAPES) else key


def unescape_storage_key(text: str) -> str:
    """Inverse of :func:`escape_storage_key`."""
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group()], text) if "%" in text else text


def storage_group(key: str) -> str:
    """Return the group of a normalised storage key (or of all keys under a prefix with two '/'): two segments."""
    return "/".join(key.split("/", 2)[:2])


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    """For every cluster slot, a short hash tag that hashes to it (``r<n>``, first found)."""
    tags: dict[int, str] = {}
    number = 0
    while len(tags) < SLOTS:
        tag = f"r{number}"
        tags.setdefault(key_slot(tag.encode()), tag)
        number += 1
    return tuple(tags[slot] for slot in range(SLOTS))


@dataclass(frozen=True)
class StorageKeySchema:
    """Builds the Valkey keys of a ``ValkeyStorage`` under one prefix, for a standalone or a cluster client.

    Methods take escaped groups and keys (:func:`escape_storage_key`).
    """

    prefix: str = "strands"
    cluster: bool = False

    def __post_init__(self) -> None:
        """Validate the prefix once, so every key built from it is well formed."""
        validate_prefix(self.prefix)

    def head(self, group: str) -> tuple[str, int]:
        """``(head, cut)``: the value key of a key of ``group`` is ``head + key[cut:]`` (scripts build them so)."""
        return (f"{self.prefix}:{{{group}}}", len(group)) if self.cluster else (f"{self.prefix}:", 0)

    def value(self, key: str) -> str:
        """Key of one stored value."""
        head, cut = self.head(storage_group(key))
        return f"{head}{key[cut:]}"

    def index(self, group: str) -> str:
        """Key of a group's index (ZSET of its keys, scores 0); its expiry is the group's deadline."""
        return f"{self.value(group)}/"

    def index_around(self) -> tuple[str, str]:
        """``(before, after)``: a group's index key is ``before + group + after`` (scripts build them so)."""
        before, _, after = self.index("\0").partition("\0")
        return before, after

    def registry(self, group: str) -> tuple[str, str]:
        """Keys of the registry holding ``group``: (ZSET of groups, ZSET of their deadlines), in the group's slot."""
        tag = f"{{{_slot_tags()[key_slot(group.encode())]}}}" if self.cluster else ""
        return f"{self.prefix}:{tag}//groups", f"{self.prefix}:{tag}//deadlines"

    def registries(self) -> list[str]:
        """Every registry's ZSET of groups: one on a standalone server, one per slot on a cluster."""
        if not self.cluster:
            return [f"{self.prefix}://groups"]
        return [f"{self.prefix}:{{{tag}}}//groups" for tag in _slot_tags()]
