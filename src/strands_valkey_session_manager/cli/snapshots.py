"""The other layout: sessions that ``SnapshotSessionManager`` keeps through ``ValkeyStorage`` (docs/cli.md).

The SDK writes a session through a storage as (strands 1.62, see ``sdk.py``)::

    session/<id>/scopes/agent/<agent>/snapshots/snapshot_latest.json                       latest snapshot
    session/<id>/scopes/agent/<agent>/snapshots/immutable_history/snapshot_<uuid7>.json    checkpoints
    session/<id>/scopes/multiAgent/<orchestrator>/snapshots/snapshot_latest.json           a Swarm/Graph
    context/<id>/...                                                                        the context stash

``ValkeyStorage`` keeps ``session/<id>`` and ``context/<id>`` as two groups, each with an index of its keys,
one deadline and an entry in the registry of groups (storage/keys.py). Everything here is found through them:
the registry lists the sessions, the indexes their keys; no SCAN, no KEYS. Deleting and expiring a group is
the storage's own script (storage/lua/storage.lua), atomic per group, its registry entry following.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from rich.markup import escape
from strands.types.session import decode_bytes_values
from valkey.exceptions import ResponseError

from .. import errors, scripts
from ..options import Client
from ..sdk import IMMUTABLE_HISTORY, SNAPSHOT_LATEST, SNAPSHOT_NAMESPACE, STASH_NAMESPACE
from ..storage.keys import StorageKeySchema, escape_storage_key, storage_group, unescape_storage_key
from ..storage.valkey_storage import STORAGE
from ..values import Values
from . import transcript
from .errors import NOT_FOUND, REFUSED, USAGE, CliError
from .output import Output, plural, seconds, shorten, ttl_seconds
from .sealed import open_value
from .store import ForeignRecord, KeyInfo, SessionExists, Store, as_bytes, as_text, pipelined, ttl_or_none

MANAGER, SNAPSHOT = "manager", "snapshot"
#: Bytes read from the start of a snapshot to find its ``created_at`` (its third field, ~90 bytes in).
HEAD = 160
_CREATED_AT = re.compile(r'"created_at"\s*:\s*"([^"]*)"')


@dataclass(frozen=True)
class SnapshotSummary:
    """One snapshot session of the listing."""

    session_id: str
    agents: int
    multi_agents: int
    checkpoints: int
    size: int  # bytes of its stored values (snapshots, checkpoints and stash)
    ttl_ms: int | None
    updated_at: str | None  # when the newest latest snapshot was taken


@dataclass(frozen=True)
class Checkpoint:
    """One immutable snapshot of an agent."""

    agent_id: str
    snapshot_id: str
    created_at: str | None
    size: int


@dataclass
class SnapshotDump:
    """A snapshot session: every storage key of it (snapshots and stash), the values read, its remaining life."""

    session_id: str
    ttl_ms: int | None
    keys: list[str]
    values: dict[str, bytes] = field(default_factory=dict)


def owned_prefixes(session_id: str) -> tuple[str, str]:
    """Return the storage key prefixes of all the SDK puts under a session: its snapshots, its context stash."""
    return f"{SNAPSHOT_NAMESPACE}/{session_id}/", f"{STASH_NAMESPACE}/{session_id}/"


def snapshot_of(session_id: str, key: str) -> tuple[str, str, str | None] | None:
    """``(scope, id, snapshot_id)`` of a snapshot key of the session (``None`` id: the latest), else ``None``."""
    head = f"{SNAPSHOT_NAMESPACE}/{session_id}/scopes/"
    parts = key[len(head) :].split("/") if key.startswith(head) else []
    if len(parts) < 4 or parts[2] != "snapshots":
        return None
    if parts[3:] == [SNAPSHOT_LATEST]:
        return parts[0], parts[1], None
    name = parts[4] if len(parts) == 5 and parts[3] == IMMUTABLE_HISTORY else ""
    if name.startswith("snapshot_") and name.endswith(".json"):
        return parts[0], parts[1], name[len("snapshot_") : -len(".json")]
    return None


def _created_at(head: Any) -> str | None:
    found = _CREATED_AT.search(as_text(head)) if isinstance(head, (bytes, str)) else None
    return found.group(1) if found else None


@dataclass(frozen=True)
class SnapshotStore:
    """The snapshot sessions of one ``ValkeyStorage`` key prefix, read and changed through a synchronous client."""

    client: Client
    keys: StorageKeySchema

    def groups(self, session_id: str) -> list[str]:
        """Return the session's two groups (escaped): its snapshots, and its context stash."""
        return [escape_storage_key(prefix.rstrip("/")) for prefix in owned_prefixes(session_id)]

    def index(self, session_id: str) -> str:
        """Return the index of the session's snapshots: the session exists in this layout while it does."""
        return self.keys.index(self.groups(session_id)[0])

    # -- listing --------------------------------------------------------------------------------------------

    def session_ids(self, match: str = "*") -> list[str]:
        """Ids of the snapshot sessions in the registry whose id matches the glob, sorted.

        One ZRANGEBYLEX on a standalone server; on a cluster one per slot's registry, pipelined (a round trip
        per primary). A group may have expired since the registry last pruned it: :meth:`summaries` drops it.
        """
        namespace = f"{SNAPSHOT_NAMESPACE}/".encode()
        reads = [
            ("ZRANGEBYLEX", registry, b"[" + namespace, b"(" + namespace + b"\xff")
            for registry in self.keys.registries()
        ]
        ids = {
            unescape_storage_key(as_text(member))[len(namespace) :]
            for members in pipelined(self.client, reads)
            for member in members
        }
        return sorted(session_id for session_id in ids if fnmatchcase(session_id, match))

    def _members(self, session_ids: list[str]) -> list[tuple[list[str], int | None]]:
        """For each session: the escaped keys of both its groups (snapshots first) and its PTTL; one round trip."""
        reads: list[tuple[Any, ...]] = []
        for session_id in session_ids:
            snapshots, stash = self.groups(session_id)
            reads += [("ZRANGE", self.keys.index(snapshots), 0, -1), ("PTTL", self.keys.index(snapshots))]
            reads.append(("ZRANGE", self.keys.index(stash), 0, -1))
        replies = iter(pipelined(self.client, reads))
        found = []
        for _ in session_ids:
            members, pttl, stashed = next(replies), next(replies), next(replies)
            keys = [as_text(member) for member in [*members, *stashed]] if members else []
            found.append((keys, ttl_or_none(pttl)))
        return found

    def summaries(self, session_ids: list[str]) -> list[SnapshotSummary]:
        """Summarise sessions in two pipelined round trips whatever their number: keys and TTL, then sizes.

        The last saved time is the newest ``created_at`` of the latest snapshots, read from their first
        ``HEAD`` bytes (``GETRANGE``), never from whole snapshots.
        """
        listed = [
            (session_id, keys, ttl)
            for session_id, (keys, ttl) in zip(session_ids, self._members(session_ids), strict=True)
        ]
        listed = [entry for entry in listed if entry[1]]  # expired since the registry listed it
        reads: list[tuple[Any, ...]] = []
        for session_id, keys, _ in listed:
            for key in keys:
                reads.append(("STRLEN", self.keys.value(key)))
                if (found := snapshot_of(session_id, unescape_storage_key(key))) and found[2] is None:
                    reads.append(("GETRANGE", self.keys.value(key), 0, HEAD - 1))
        replies = iter(pipelined(self.client, reads, raising=False))
        summaries = []
        for session_id, keys, ttl in listed:
            size, saved, scopes = 0, [], []
            for key in keys:
                length = next(replies)
                size += length if isinstance(length, int) else 0
                found = snapshot_of(session_id, unescape_storage_key(key))
                if found is not None:
                    scopes.append(found)
                    if found[2] is None:
                        saved.append(_created_at(next(replies)))
            stamps = [stamp for stamp in saved if stamp]
            summaries.append(
                SnapshotSummary(
                    session_id,
                    agents=len({member for scope, member, _ in scopes if scope == "agent"}),
                    multi_agents=len({member for scope, member, _ in scopes if scope == "multiAgent"}),
                    checkpoints=sum(snapshot_id is not None for _, _, snapshot_id in scopes),
                    size=size,
                    ttl_ms=ttl,
                    updated_at=max(stamps) if stamps else None,
                )
            )
        return summaries

    # -- one session ------------------------------------------------------------------------------------------

    def dump(
        self, session_id: str, wanted: Callable[[str], bool] = lambda key: True, settings: Values | None = None
    ) -> SnapshotDump | None:
        """Read the session's keys and the values of those ``wanted`` (two round trips); ``None``: no such session.

        The snapshots are immutable but for the latest ones, each written whole: every value read is one
        snapshot as the SDK wrote it. Reading slides no expiry. With ``settings``, values a ``ValkeyStorage`` with
        encryption or compression sealed are opened (``CliError`` if one cannot be: sealed.open_value).
        """
        ((members, ttl),) = self._members([session_id])
        if not members:
            return None
        keys = sorted(unescape_storage_key(member) for member in members)
        reading = [key for key in keys if wanted(key)]
        got = pipelined(self.client, [("GET", self.keys.value(escape_storage_key(key))) for key in reading])
        values = {key: as_bytes(value) for key, value in zip(reading, got, strict=True) if value is not None}
        if settings is not None:
            values = {
                key: open_value(settings, self.keys.value(escape_storage_key(key)), v) for key, v in values.items()
            }
        return SnapshotDump(session_id, ttl, keys, values)

    def checkpoints(self, session_id: str) -> list[Checkpoint] | None:
        """Every immutable snapshot of the session's agents, oldest first per agent; ``None`` if no session."""
        dump = self.dump(session_id, wanted=lambda key: False)
        if dump is None:
            return None
        found = [(key, parsed) for key in dump.keys if (parsed := snapshot_of(session_id, key)) and parsed[2]]
        reads: list[tuple[Any, ...]] = []
        for key, _ in found:
            value = self.keys.value(escape_storage_key(key))
            reads += [("GETRANGE", value, 0, HEAD - 1), ("STRLEN", value)]
        replies = iter(pipelined(self.client, reads))
        listed = [
            Checkpoint(member, str(snapshot_id), _created_at(next(replies)), next(replies))
            for key, (_, member, snapshot_id) in found
        ]
        return sorted(listed, key=lambda checkpoint: (checkpoint.agent_id, checkpoint.snapshot_id))

    def key_infos(self, session_id: str) -> list[KeyInfo]:
        """Every key of the session (both groups' indexes and values) with type, TTL, length and memory."""
        ((members, _),) = self._members([session_id])
        if not members:
            return []
        indexes = [self.keys.index(group) for group in self.groups(session_id)]
        names = [*indexes, *(self.keys.value(member) for member in members)]
        reads: list[tuple[Any, ...]] = []
        for name in names:
            reads += [("TYPE", name), ("PTTL", name), ("ZCARD" if name in indexes else "STRLEN", name)]
            reads.append(("MEMORY", "USAGE", name))
        replies = iter(pipelined(self.client, reads, raising=False))
        infos = [KeyInfo(name, as_text(next(replies)), *_life_and_sizes(replies)) for name in names]
        return [info for info in infos if info.type != "none"]

    def restore(self, dump: SnapshotDump, force: bool = False) -> int:
        """Write an exported snapshot session back, each of its two groups atomically; returns the values written.

        Every key gets the dump's remaining life from now. With ``force`` the session's keys that exist are
        replaced (a group absent from the dump is deleted); without, an existing session is left alone.

        Raises:
            SessionExists: If the session exists and ``force`` is false (nothing is written).
            ForeignRecord: If a key to write exists but is no key of its group (nothing of that group changed).
        """
        groups: dict[str, list[str]] = {group: [] for group in self.groups(dump.session_id)}
        for key in dump.values:  # transfer.read allows only keys of these two groups
            groups[storage_group(escape_storage_key(key))].append(key)
        if not force and any(pipelined(self.client, [("EXISTS", self.keys.index(group)) for group in groups])):
            raise SessionExists(f"Session {dump.session_id} already exists")
        written = 0
        for group, keys in groups.items():
            if not keys:
                if force:
                    self._group(group, "drop")
                continue
            values = [item for key in keys for item in (escape_storage_key(key), dump.values[key])]
            declared = [self.keys.value(escape_storage_key(key)) for key in keys]
            count = self._group(group, "put", dump.ttl_ms or 0, "force" if force else "", values, declared)
            if count < 0:
                raise SessionExists(f"Session {dump.session_id} already exists")
            written += count
        return written

    def delete(self, session_id: str) -> int:
        """Delete the session's snapshots and its context stash, each group atomically; returns the keys deleted."""
        return sum(self._group(group, "drop") for group in self.groups(session_id))

    def expire(self, session_id: str, ttl_ms: int | None) -> int:
        """Give every key of both groups one deadline ``ttl_ms`` from now (``None``: none); returns how many."""
        return sum(self._group(group, "expire", ttl_ms or 0) for group in self.groups(session_id))

    def _group(
        self,
        group: str,
        operation: str,
        ttl_ms: int = 0,
        flag: str = "",
        values: list[str | bytes] | None = None,
        declared: list[str] | None = None,
    ) -> int:
        """Run the storage script's whole-group ``operation``, declaring the keys it reports undeclared.

        Raises:
            ForeignRecord: If the script found a key this library did not write (nothing changed).
        """
        index = self.keys.index(group)
        head, cut = self.keys.head(group)
        keys = [index, index, *self.keys.registry(group), *(declared or [])]
        args = [ttl_ms, operation, flag, group, head, cut, *(values or [])]
        for _ in range(scripts.MAX_WALKS):
            try:
                return int(STORAGE(self.client, keys, args))
            except ResponseError as error:
                code, detail = errors.error_code(error)
                if code == errors.FOREIGN:
                    key, _, holds = detail.partition(" ")
                    raise ForeignRecord(errors.foreign(operation, key, holds)) from error
                keys += scripts.undeclared(error, index)
        raise errors.SessionChanging(f"{index}: its keys changed during {scripts.MAX_WALKS} calls")


def _life_and_sizes(replies: Any) -> tuple[int | None, int, int]:
    pttl, length, memory = next(replies), next(replies), next(replies)
    sizes = [size if isinstance(size, int) else 0 for size in (length, memory)]  # an error reply (no MEMORY): 0
    return ttl_or_none(pttl if isinstance(pttl, int) else -2), sizes[0], sizes[1]


def beside(store: Store, prefix: str = "strands") -> SnapshotStore:
    """Return the snapshot sessions under the storage ``prefix`` on ``store``'s server (cluster layout alike)."""
    return SnapshotStore(store.client, StorageKeySchema(prefix, cluster=store.keys.cluster))


# -- which layout ---------------------------------------------------------------------------------------------


def layouts_of(store: Store, snapshots: SnapshotStore, session_id: str) -> list[str]:
    """Return the layouts in which the session exists (``manager``, ``snapshot``): one pipelined round trip."""
    found = pipelined(
        store.client, [("EXISTS", store.keys.session(session_id)), ("EXISTS", snapshots.index(session_id))]
    )
    return [layout for layout, count in zip((MANAGER, SNAPSHOT), found, strict=True) if count]


def pick(store: Store, snapshots: SnapshotStore, session_id: str, layout: str | None) -> str | None:
    """Return the layout to act on for the session (``None``: none holds it); ``--layout`` decides when given.

    Raises:
        CliError: If the id exists in both layouts and ``layout`` is ``None`` (usage: pass --layout).
    """
    if layout is not None:
        return layout
    found = layouts_of(store, snapshots, session_id)
    if len(found) > 1:
        raise CliError(
            f"session {shorten(session_id)} exists in both layouts: as a ValkeySessionManager session "
            f"({store.keys.session(session_id)}) and as a SnapshotSessionManager one ({snapshots.index(session_id)}). "
            "Pass --layout manager or --layout snapshot.",
            USAGE,
        )
    return found[0] if found else None


# -- what the commands print ------------------------------------------------------------------------------------


def summary_json(summary: SnapshotSummary) -> dict[str, Any]:
    """Describe a snapshot session for ``sessions --json`` (the manager's fields where they mean the same)."""
    return {
        "session_id": summary.session_id,
        "layout": SNAPSHOT,
        "agents": summary.agents,
        "multi_agents": summary.multi_agents,
        "messages": None,
        "checkpoints": summary.checkpoints,
        "size": summary.size,
        "ttl": ttl_seconds(summary.ttl_ms),
        "created_at": None,
        "updated_at": summary.updated_at,
    }


def _snapshot(raw: bytes, where: str) -> dict[str, Any]:
    """Parse a stored snapshot as the SDK reads it (JSON, bytes base64-decoded); ``CliError`` if it is none."""
    try:
        data = decode_bytes_values(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as error:
        raise CliError(f"{where} holds no snapshot the SDK wrote ({error}); it is left untouched", REFUSED) from error
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise CliError(f"{where} holds no snapshot the SDK wrote (no 'data' object); it is left untouched", REFUSED)
    return data


def _render_snapshot(out: Output, snapshot: dict[str, Any], checkpoints: int) -> None:
    """Print one agent snapshot: when it was taken, its state, then its conversation as for the other layout."""
    data = snapshot["data"]
    kept = f"  {plural(checkpoints, 'checkpoint')}" if checkpoints else ""
    out.say(f"saved {transcript.stamp(snapshot.get('created_at'))}{kept}")
    if data.get("state"):
        out.say(f"state {escape(json.dumps(data['state'], ensure_ascii=False, default=repr))}")
    messages = data.get("messages") if isinstance(data.get("messages"), list) else []
    transcript.render_messages(out, [(number, None, message, False) for number, message in enumerate(messages)])


def render(out: Output, dump: SnapshotDump, storage_prefix: str) -> None:
    """Print a snapshot session: the latest snapshot of each agent, then orchestrators and the stash."""
    out.say(
        f"[bold]Session {escape(dump.session_id)}[/bold]  snapshot layout (SnapshotSessionManager, "
        f"storage prefix {escape(storage_prefix)})  ttl {seconds(dump.ttl_ms)}"
    )
    parsed = [(key, found) for key in dump.keys if (found := snapshot_of(dump.session_id, key))]
    for key, (scope, member, snapshot_id) in parsed:
        if snapshot_id is not None or key not in dump.values:
            continue
        snapshot = _snapshot(dump.values[key], key)
        if scope == "agent":
            out.heading(f"agent {member}")
            count = sum(1 for _, found in parsed if found[:2] == (scope, member) and found[2] is not None)
            _render_snapshot(out, snapshot, count)
        else:
            out.heading(f"{'multi-agent' if scope == 'multiAgent' else scope} {member}")
            out.say(f"saved {transcript.stamp(snapshot.get('created_at'))}")
            out.say(escape(transcript.short(snapshot["data"])))
    stash = [key for key in dump.keys if key.startswith(owned_prefixes(dump.session_id)[1])]
    if stash:
        where = f"{STASH_NAMESPACE}/{dump.session_id}/"
        out.say(f"\n[dim]context stash: {plural(len(stash), 'key')} under {escape(where)}[/dim]")


def show_json(dump: SnapshotDump) -> dict[str, Any]:
    """``show --json`` of a snapshot session: each agent's latest snapshot and its checkpoint ids, in order."""
    agents: dict[str, Any] = {}
    multi_agents: dict[str, Any] = {}
    for key in dump.keys:
        found = snapshot_of(dump.session_id, key)
        if found is None:
            continue
        scope, member, snapshot_id = found
        into = agents if scope == "agent" else multi_agents
        entry: dict[str, Any] = into.setdefault(member, {"latest": None, "checkpoints": []})
        if snapshot_id is not None:
            entry["checkpoints"].append(snapshot_id)
        elif key in dump.values:
            entry["latest"] = json.loads(dump.values[key])
    return {
        "session_id": dump.session_id,
        "layout": SNAPSHOT,
        "ttl_ms": dump.ttl_ms,
        "agents": agents,
        "multi_agents": multi_agents,
        "stash": [key for key in dump.keys if key.startswith(owned_prefixes(dump.session_id)[1])],
    }


def show(
    out: Output,
    snapshots: SnapshotStore,
    session_id: str,
    list_checkpoints: bool,
    checkpoint: str | None,
    settings: Values | None = None,
) -> bool:
    """``show`` of a snapshot session: its latest snapshots, its checkpoints, or one checkpoint. False: no session.

    ``settings``: open sealed values (a ``ValkeyStorage`` with encryption or compression); ``None``: as stored.
    """
    if list_checkpoints:
        return _show_checkpoints(out, snapshots, session_id)
    if checkpoint is not None:
        return _show_checkpoint(out, snapshots, session_id, checkpoint, settings)
    dump = snapshots.dump(session_id, wanted=lambda key: _is_latest(session_id, key), settings=settings)
    if dump is None:
        return False
    if out.as_json:
        out.json(show_json(dump))
    else:
        render(out, dump, snapshots.keys.prefix)
    return True


def _is_latest(session_id: str, key: str) -> bool:
    found = snapshot_of(session_id, key)
    return found is not None and found[2] is None


def _show_checkpoints(out: Output, snapshots: SnapshotStore, session_id: str) -> bool:
    found = snapshots.checkpoints(session_id)
    if found is None:
        return False
    if out.as_json:
        fields = ("agent_id", "snapshot_id", "created_at", "size")
        out.json([{name: getattr(checkpoint, name) for name in fields} for checkpoint in found])
    elif found:
        rows = [[c.agent_id, c.snapshot_id, transcript.stamp(c.created_at), c.size] for c in found]
        out.table(["AGENT", "SNAPSHOT", "SAVED", "SIZE"], rows, right=["SIZE"])
    else:
        out.note(f"session {escape(session_id)} has no checkpoints (the SDK writes one when snapshot_trigger fires)")
    return True


def _show_checkpoint(
    out: Output, snapshots: SnapshotStore, session_id: str, checkpoint: str, settings: Values | None
) -> bool:
    name = f"/{IMMUTABLE_HISTORY}/snapshot_{checkpoint}.json"
    dump = snapshots.dump(session_id, wanted=lambda key: key.endswith(name), settings=settings)
    if dump is None:
        return False
    if not dump.values:
        raise CliError(
            f"session {shorten(session_id)} has no checkpoint {checkpoint!r}. "
            f"List them with: strands-valkey show {session_id} --checkpoints",
            NOT_FOUND,
        )
    ((key, raw),) = dump.values.items()
    agent_id = (snapshot_of(session_id, key) or ("", "?", None))[1]
    snapshot = _snapshot(raw, key)
    if out.as_json:
        out.json(
            {"session_id": session_id, "agent_id": agent_id, "snapshot_id": checkpoint, "snapshot": json.loads(raw)}
        )
        return True
    out.say(f"[bold]Session {escape(session_id)}[/bold]  checkpoint {escape(checkpoint)} of agent {escape(agent_id)}")
    _render_snapshot(out, snapshot, 0)
    return True
