"""Key layout of ``ValkeyStorage``: the one place its Valkey key names are built.

A storage key (``session/<id>/scopes/agent/<id>/snapshots/snapshot_latest.json``) belongs to a group: its first two
'/'-separated segments (the whole key if it has at most two). A group's keys share one deadline and, on a cluster,
one slot. With the default prefix and a standalone client::

    strands:<key>                     the value (bytes)
    strands:<group>/                  ZSET of the group's keys, all scores 0: the group's index
    strands://groups                  ZSET of every group, all scores 0: the registry, for prefixes above a group
    strands://deadlines               ZSET of every group scored by its deadline (ms; +inf = none)

With a cluster client the group is the hash tag (``strands:{session/abc}/scopes/...``, index
``strands:{session/abc}/``) and each slot has its own registry (``strands:{<tag of the slot>}//groups``), so that a
group and its registry entry change in one atomic script. No storage key starts or ends with '/', so none of these
names can collide. '%', '{' and '}' in storage keys are percent-escaped in Valkey key names (and index members):
braces would break hash tags. Escaping keeps prefixes: a key starts with a prefix exactly when its escaped form
starts with the escaped prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from valkey.crc import key_slot

from ..keys import validate_prefix

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
