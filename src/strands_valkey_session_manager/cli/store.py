"""Inspect and manage stored sessions: list, keys, dump, restore, delete, expire. No UI here.

Every walk of one session follows its index in a Lua script (``walk()`` in lua/session.lua):
no SCAN, no KEYS, nothing of another session touched. Only :meth:`Store.summaries` scans, because
listing every session has no index to follow: it scans incrementally (SCAN with MATCH, TYPE and
COUNT) and reads each batch's counts from the session indexes and message-id ZSETs, pipelined.

Errors from Valkey (``valkey.exceptions.ValkeyError``) propagate as they are; the CLI maps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from strands.types.exceptions import SessionException
from valkey.exceptions import AskError, MovedError, ResponseError

from .. import errors, replication, scripts
from ..connection import driver_for
from ..driver import Driver, drive
from ..keys import AGENT, MESSAGE, MULTI_AGENT, SESSION, KeySchema, parse_suffix, validate_id
from ..options import Client
from ..values import Values

#: COUNT hint for SCAN, and the number of sessions summarised per pipelined batch.
SCAN_COUNT = 1000
#: Bytes read from the end of a record to find its ``updated_at`` (its last field: ~60 bytes with the key).
TAIL = 128
_UPDATED_AT = '"updated_at":"'


def as_bytes(value: bytes | str) -> bytes:
    """Return a stored value as bytes, whether the client decodes responses or not."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def as_text(value: bytes | str) -> str:
    """Return a key name (or reply) as text; bytes that are not UTF-8 survive as surrogate escapes."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def ttl_or_none(pttl_ms: int) -> int | None:
    """PTTL's answer as a remaining life in ms, ``None`` for a key without expiry."""
    return None if pttl_ms < 0 else pttl_ms


@dataclass(frozen=True)
class SessionSummary:
    """One line of the session listing."""

    session_id: str
    agents: int
    multi_agents: int
    messages: int
    ttl_ms: int | None
    created_at: str | None
    updated_at: str | None


@dataclass
class _Summary:
    """A session summary while its batch is being read."""

    session_id: str
    agents: list[str]
    multi_agents: int
    ttl_ms: int | None
    created_at: str | None
    updated: list[Any]  # the updated_at of each record read: a string, or None (or anything, if foreign)
    messages: int = 0

    def done(self) -> SessionSummary:
        stamps = [stamp for stamp in self.updated if isinstance(stamp, str)]
        return SessionSummary(
            self.session_id,
            len(self.agents),
            self.multi_agents,
            self.messages,
            self.ttl_ms,
            self.created_at,
            max(stamps) if stamps else None,
        )


@dataclass(frozen=True)
class KeyInfo:
    """One key of a session: its type, remaining life (``None`` = none), length and memory use."""

    key: str
    type: str
    ttl_ms: int | None
    length: int
    memory: int


@dataclass
class AgentDump:
    """One agent's stored values: its state record (if any) and its messages by id."""

    record: bytes | None = None
    messages: dict[int, bytes] = field(default_factory=dict)


@dataclass
class SessionDump:
    """Every record of one session, as the exact bytes stored, and its remaining life."""

    session_id: str
    ttl_ms: int | None
    record: bytes
    agents: dict[str, AgentDump] = field(default_factory=dict)
    multi_agents: dict[str, bytes] = field(default_factory=dict)
    #: String keys of the session that are no record this library writes (not exported).
    skipped: list[str] = field(default_factory=list)


class SessionExists(Exception):
    """Raised by :meth:`Store.restore` when the session exists and ``force`` was not given."""


class ForeignRecord(Exception):
    """Raised when a session key holds a value this library did not write: nothing was changed or read."""


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _updated_at(tail: Any) -> str | None:
    """Return the ``updated_at`` in the tail of a record (its last field), or ``None`` if the tail holds none."""
    if not isinstance(tail, (bytes, str)):
        return None
    text = as_text(tail)
    start = text.rfind(_UPDATED_AT)
    end = text.find('"', start + len(_UPDATED_AT)) if start >= 0 else -1
    return text[start + len(_UPDATED_AT) : end] if end >= 0 else None


def _json_field(raw: bytes | str | None, name: str) -> Any:
    """``json.loads(raw)[name]``, or ``None`` for anything that is not a JSON object."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def pipelined(client: Client, commands: list[tuple[Any, ...]], raising: bool = True) -> list[Any]:
    """Send read commands about any keys in one round trip per node, on any synchronous client; their replies.

    A command's key is its first argument (``MEMORY USAGE``'s, its second). A reply of a key whose slot moved
    meanwhile is read again, following it. Errors are raised (the first), or with ``raising=False`` returned as
    values.
    """
    driver = driver_for(client)
    groups = [(as_text(command[2] if command[0] == "MEMORY" else command[1]), [command]) for command in commands]
    replies = [reply for (reply,) in drive(replication.each_slot_on(driver, groups))]
    for at, reply in enumerate(replies):
        if isinstance(reply, MovedError | AskError):
            (replies[at],) = drive(replication.read_on(driver, groups[at][0], commands[at]))
    failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if raising and failed is not None:
        raise failed
    return replies


def scan(client: Client, pattern: str, count: int, kind: str) -> Iterator[bytes | str]:
    """``SCAN`` the keys of type ``kind`` matching ``pattern`` (on each primary of a cluster)."""
    driver = driver_for(client)
    nodes = [node for node, _ in drive(driver.primaries())] if driver.cluster else [None]
    for node in nodes:
        cursor = 0
        while True:
            reply = _on(driver, node, "SCAN", cursor, "MATCH", pattern, "COUNT", count, "TYPE", kind)
            position = reply[0]  # valkey-py's cluster client gives it by node
            cursor, found = int(next(iter(position.values())) if isinstance(position, dict) else position), reply[1]
            yield from found
            if not cursor:
                break


def key_count(client: Client) -> int:
    """Return the number of keys (``DBSIZE``; on a cluster, summed over its primaries)."""
    driver = driver_for(client)
    nodes = [node for node, _ in drive(driver.primaries())] if driver.cluster else [None]
    return sum(int(_on(driver, node, "DBSIZE")) for node in nodes)


def _on(driver: Driver, node: Any, *command: Any) -> Any:
    """Send ``command`` to ``node`` of a cluster (``None``: the standalone server); its reply."""
    if node is None:
        return drive(driver.command(*command))
    reply = drive(driver.command(*command, target_nodes=node))
    return next(iter(reply.values())) if isinstance(reply, dict) else reply  # valkey-py's cluster: by node


@dataclass(frozen=True)
class Store:
    """The sessions under one key prefix on one server (standalone or cluster)."""

    client: Client
    keys: KeySchema

    @classmethod
    def of(cls, client: Client, key_prefix: str = "session") -> Store:
        """Wrap a client; a ``ValkeyCluster`` gets the hash-tagged key layout, as the manager uses."""
        return cls(client, KeySchema(key_prefix, cluster=driver_for(client).cluster))

    def _run(self, script: scripts.Script, session_id: str, *own: str, ttl_ms: int = 0, **options: Any) -> Any:
        """Run an admin script on one session (KEYS: its record, its index, ``own``; its keys learnt by walking).

        Raises:
            ForeignRecord: If the session key holds a value this library did not write (nothing changed).
        """
        keys = [self.keys.session(session_id), self.keys.index(session_id), *own]
        try:
            return scripts.run(script, self.client, keys, options.pop("args", []), ttl_ms=ttl_ms, **options)
        except ResponseError as error:
            code, detail = errors.error_code(error)
            if code != errors.FOREIGN:
                raise
            key, _, holds = detail.partition(" ")
            raise ForeignRecord(errors.foreign(script.name.replace("_", " "), key, holds)) from error

    # -- listing ----------------------------------------------------------------------------

    def session_id_of(self, key: str) -> str | None:
        """Return the session id if ``key`` is a session record key (not a member key), else ``None``."""
        parsed = self.keys.parse(key)
        return parsed.session_id if parsed is not None and parsed.kind == SESSION else None

    def summaries(
        self,
        match: str = "*",
        count: int = SCAN_COUNT,
        batch: int = SCAN_COUNT,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[SessionSummary]:
        """Yield a summary of every session whose id matches the glob ``match``, in SCAN order.

        SCAN (MATCH ``<prefix>:<match>``, TYPE string, COUNT ``count``) finds the session records;
        each ``batch`` of sessions then costs two pipelined round trips (record, PTTL and index;
        then ZCARD and state of each agent), never a SCAN per session. ``progress(keys_matched,
        sessions_found)`` is called every ``count`` matched keys and after each batch. Strings
        under the prefix that are not session records of this library (say, a web framework's
        ``session:<id>``) are skipped.
        """
        matched = found = 0

        def candidates() -> Iterator[str]:
            nonlocal matched
            for key in scan(self.client, self.keys.session_pattern(match), count, "string"):
                matched += 1
                if progress is not None and matched % count == 0:
                    progress(matched, found)
                session_id = self.session_id_of(as_text(key))
                if session_id is not None:
                    yield session_id

        for batch_ids in _batches(candidates(), batch):
            summaries = self._summarise(batch_ids)
            found += len(summaries)
            if progress is not None:
                progress(matched, found)
            yield from summaries
        if progress is not None:
            progress(matched, found)

    def _summarise(self, session_ids: list[str]) -> list[SessionSummary]:
        """Summarise a batch of sessions in three pipelined round trips, whatever the batch's size.

        1. each session's record, PTTL and index (its agents);
        2. each agent's message count (ZCARD), newest message id (ZRANGE -1 -1) and the tail of its record;
        3. the tail of each agent's newest message.

        ``updated_at`` is the newest of the session's, its agents' and their newest messages' ``updated_at``: an
        append touches no record but its message's, whose ``updated_at`` is its ``created_at`` (or when it was
        redacted). A tail (``GETRANGE -TAIL -1``) is enough, since ``updated_at`` is the last field of each record
        (the SDK's field order, kept by codec), and keeps a listing from reading whole messages (images...).
        """
        reads: list[tuple[Any, ...]] = []
        for session_id in session_ids:
            reads += [("GET", self.keys.session(session_id)), ("PTTL", self.keys.session(session_id))]
            reads.append(("SMEMBERS", self.keys.index(session_id)))
        replies = iter(pipelined(self.client, reads, raising=False))
        summaries: list[_Summary] = []
        for session_id in session_ids:
            record, pttl, members = next(replies), next(replies), next(replies)
            if _json_field(record, "session_id") != session_id and not (record and Values.is_sealed(record)):
                continue  # expired since the SCAN, or a foreign value under the prefix (a sealed one is ours)
            names = [as_text(member) for member in members] if isinstance(members, (set, list)) else []
            parsed = [found for found in map(parse_suffix, names) if found is not None]
            created = _json_field(record, "created_at")
            summaries.append(
                _Summary(
                    session_id,
                    agents=[member_id for kind, member_id, _, _ in parsed if kind == AGENT],
                    multi_agents=len([kind for kind, _, _, _ in parsed if kind == MULTI_AGENT]),
                    ttl_ms=ttl_or_none(pttl if isinstance(pttl, int) else -1),
                    created_at=created if isinstance(created, str) else None,
                    updated=[_json_field(record, "updated_at")],
                )
            )
        self._read_agents(summaries)
        return [summary.done() for summary in summaries]

    def _read_agents(self, summaries: list[_Summary]) -> None:
        """Count each agent's messages and collect its and its newest message's ``updated_at``: two round trips."""
        reads: list[tuple[Any, ...]] = []
        for summary in summaries:
            for agent_id in summary.agents:
                messages = self.keys.messages(summary.session_id, agent_id)
                reads += [("ZCARD", messages), ("ZRANGE", messages, -1, -1)]
                reads.append(("GETRANGE", self.keys.agent(summary.session_id, agent_id), -TAIL, -1))
        replies = iter(pipelined(self.client, reads, raising=False))
        tails: list[tuple[Any, ...]] = []
        asked: list[_Summary] = []  # whose newest message's tail each reply of the next round trip is
        for summary in summaries:
            for agent_id in summary.agents:
                count, newest, tail = next(replies), next(replies), next(replies)
                summary.messages += count if isinstance(count, int) else 0
                summary.updated.append(_updated_at(tail))
                if isinstance(newest, list) and newest and as_text(newest[0]).isdecimal():
                    tails.append(
                        ("GETRANGE", self.keys.message(summary.session_id, agent_id, int(newest[0])), -TAIL, -1)
                    )
                    asked.append(summary)
        for summary, tail in zip(asked, pipelined(self.client, tails, raising=False), strict=True):
            summary.updated.append(_updated_at(tail))

    # -- one session ------------------------------------------------------------------------

    def key_infos(self, session_id: str) -> list[KeyInfo]:
        """Every key of the session (found through its index) with type, TTL, length and memory."""
        reply = self._run(scripts.SESSION_KEYS, session_id)
        return [
            KeyInfo(as_text(reply[i]), as_text(reply[i + 1]), ttl_or_none(reply[i + 2]), reply[i + 3], reply[i + 4])
            for i in range(0, len(reply), 5)
        ]

    def dump(self, session_id: str) -> SessionDump | None:
        """Every record of the session at one instant, byte for byte, or ``None`` if it does not exist."""
        reply = self._run(scripts.DUMP_SESSION, session_id, raw=True)  # bytes: values may be binary (values.py)
        if reply[0] == -2:
            return None
        session_key = self.keys.session(session_id)
        record: bytes | None = None
        agents: dict[str, AgentDump] = {}
        multi_agents: dict[str, bytes] = {}
        skipped: list[str] = []
        for key, value in zip(reply[1::2], reply[2::2], strict=True):
            name, stored = as_text(key), as_bytes(value)
            parsed = self.keys.parse(name)
            if parsed is None or parsed.session_id != session_id:
                skipped.append(name)
            elif parsed.kind == SESSION:
                record = stored
            elif parsed.kind == AGENT:
                agents.setdefault(parsed.member_id, AgentDump()).record = stored
            elif parsed.kind == MESSAGE and parsed.message_id is not None:
                agents.setdefault(parsed.member_id, AgentDump()).messages[parsed.message_id] = stored
            elif parsed.kind == MULTI_AGENT:
                multi_agents[parsed.member_id] = stored
            else:
                skipped.append(name)
        if record is None:
            raise SessionException(f"key=<{session_key}> | dump failed: the key holds no session record")
        for agent in agents.values():
            agent.messages = dict(sorted(agent.messages.items()))
        return SessionDump(session_id, ttl_or_none(reply[0]), record, agents, multi_agents, skipped)

    def restore(self, dump: SessionDump, force: bool = False) -> int:
        """Write a dumped session back atomically, index and message-id ZSETs rebuilt as the manager writes them.

        Every key gets the dump's remaining life (from now). Returns the number of records written.

        Raises:
            SessionExists: If the session exists and ``force`` is false (nothing is written).
        """
        session_id = validate_id(dump.session_id, "session_id")
        keys, groups = [self.keys.session(session_id)], [(dump.record, "", "", "")]
        for agent_id, agent in dump.agents.items():
            suffix = self.keys.agent_suffix(agent_id)
            if agent.record is not None:
                keys.append(self.keys.agent(session_id, agent_id))
                groups.append((agent.record, suffix, "", ""))
            ids_key = self.keys.messages(session_id, agent_id)
            for message_id, value in agent.messages.items():
                keys.append(self.keys.message(session_id, agent_id, message_id))
                groups.append((value, suffix, ids_key, str(message_id)))
        for multi_agent_id, value in dump.multi_agents.items():
            keys.append(self.keys.multi_agent(session_id, multi_agent_id))
            groups.append((value, self.keys.multi_agent_suffix(multi_agent_id), "", ""))
        ids_keys = [self.keys.messages(session_id, agent_id) for agent_id in dump.agents]
        args = ["force" if force else "", *(item for group in groups for item in group)]
        written = int(
            self._run(scripts.IMPORT_SESSION, session_id, *keys, ttl_ms=dump.ttl_ms or 0, args=args, walk=ids_keys)
        )
        if written < 0:
            raise SessionExists(f"Session {session_id} already exists")
        return written

    def delete(self, session_id: str) -> int:
        """Delete every key of the session atomically (the manager's own script); returns how many."""
        return int(self._run(scripts.DELETE_SESSION, session_id))

    def expire(self, session_id: str, ttl_ms: int | None) -> int:
        """Give every key of the session one deadline ``ttl_ms`` from now (``None``: no expiry), atomically.

        Returns the number of keys changed (0: the session does not exist). A manager with a ttl
        that writes to the session later slides its deadline again, as it always does.
        """
        if ttl_ms is not None and ttl_ms <= 0:
            raise ValueError(f"ttl_ms=<{ttl_ms}> | must be positive, or None for no expiry")
        return int(self._run(scripts.EXPIRE_SESSION, session_id, ttl_ms=ttl_ms or 0))
