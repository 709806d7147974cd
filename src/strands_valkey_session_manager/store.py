"""The store's operations on one session: each written once, as ``async def`` on a driver (driver.py).

:class:`SessionStore` is what ``ValkeySessionManager`` (session_manager.py) stores and reads through: every
read and write of a session's keys, and what one manager knows of its session between two of them (the keys
that exist, the bytes it last stored at each agent record, the session's deadline and the server's clock,
the appends that failed on the wire). Its operations run on any kind of client: a synchronous driver's never
suspend (``drive``), an asyncio one's are awaited; where they run is the manager's runner's concern
(runner.py). The key layout is drawn in ``ValkeySessionManager``'s docstring; keys are built in keys.py,
values (de)serialised in codec.py and sealed in values.py, and made atomic by the scripts (lua/, scripts.py)
or by ``MULTI``/``EXEC`` (replication.py).
"""

from __future__ import annotations

import functools
import json
import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage, SessionType
from valkey.client import NEVER_DECODE
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from . import codec, directory, errors, replication, scripts, telemetry
from .driver import Driver
from .invocation import Heartbeat
from .keys import AGENT, MESSAGE, MESSAGES, MULTI_AGENT, KeySchema, parse_suffix
from .lock import Member, SessionLock
from .values import Values

logger = logging.getLogger(__name__)

#: ``with _errors(operation, key[, not_found]):`` turns what Valkey raises into a ``SessionException``.
_errors = functools.partial(errors.translated, SessionException)

#: Clients whose server refused ``SET ... IFEQ`` (before Valkey 8.1; Redis OSS): their agent updates are scripts.
_NO_IFEQ: weakref.WeakSet[Any] = weakref.WeakSet()


class SessionStore:
    """One manager's session in Valkey: its operations, and what the manager knows of it between them."""

    def __init__(
        self,
        session_id: str,
        keys: KeySchema,
        ttl_ms: int,
        values: Values,
        replica_wait: replication.WaitForReplicas | None,
        lock: SessionLock | None,
        listing: directory.Listing,
        heartbeat: Heartbeat,
        owner: str | None,
    ) -> None:
        """Describe the session; nothing is sent."""
        self.session_id, self.keys, self.ttl_ms = session_id, keys, ttl_ms
        self.values, self.replica_wait, self.lock, self.listing = values, replica_wait, lock, listing
        self.heartbeat, self.owner = heartbeat, owner
        # Messages whose append failed on the wire, by (session, agent): re-sent, byte for byte, before the next one.
        self.unconfirmed: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        # What this manager last stored or read at each agent record of its session (by key): an update writes over
        # exactly that, or goes by the script (_update_plain).
        self.stored: dict[str, bytes] = {}
        # Keys of this manager's session it knows exist (records, message-id ZSETs, messages it wrote or read,
        # and those a walk asked for): declared up front when a script must reach every key (scripts.run).
        self.known: dict[str, None] = {}
        # The session's deadline (ms on the server's clock, -1: none) as last seen, and the server's clock minus
        # this host's (ms, plus the error of that estimate): the plain-command writes need both (fresh_deadline).
        self.deadline: int | None = None
        self.clock_ms: float | None = None
        # While the manager opens: a create that finds the session made meanwhile joins it (joined_existing).
        self.opening = True
        self.joined_existing = False

    def agent_ids(self) -> list[str]:
        """Return the agents of this session that opening it found in its index."""
        parsed = [self.keys.parse(key) for key in list(self.known)]
        return [found.member_id for found in parsed if found is not None and found.kind == AGENT]

    # -- the session ------------------------------------------------------------------------

    def check_owner(self, key: str, raw: bytes | str | None) -> None:
        """Refuse to open a session of another owner (``SessionAccessError``: it says nothing of the session).

        ``raw``: the session record as just read (``None``: no session yet, it is created with ``owner``). An
        existing session opens with the owner it was created with, or with none given (not ``require_owner``).
        """
        stored = None if raw is None else directory.owner_of(raw, key, self.values)
        if raw is not None and self.owner not in (None, stored):
            logger.debug("session_id=<%s> | refused: not opened with its owner", self.session_id)
            raise directory.SessionAccessError(self.session_id)
        self.owner = self.listing.owner = stored if raw is not None else self.owner

    async def script(
        self,
        io: Driver,
        script: scripts.Script,
        session_id: str,
        own: list[str],
        args: list[Any],
        write: bool = True,
        **walk: Any,
    ) -> Any:
        """Run a session script (lua/session.lua): KEYS are the session key, its index and ``own``.

        A ``write`` waits for ``wait_replicas`` replicas, if asked to; a read does not. With the session
        lock on, a write to a member whose lock this manager holds is fenced (lock.py). ``walk=[keys]``
        declares keys a TTL refresh will need (the rest are learnt, scripts.run).
        """
        keys = [self.keys.session(session_id), self.keys.index(session_id), *own]
        fence = self.lock.fence(own[0]) if self.lock is not None and write and own else None
        wait = self.replica_wait if write else None
        known = self.known if session_id == self.session_id else None
        sent = time.monotonic()
        reply = await scripts.run_on(
            script, io, keys, args, ttl_ms=self.ttl_ms, fence=fence, known=known, wait=wait, **walk
        )
        self.heartbeat.refreshed = sent  # every session script refreshes the session when due
        return reply

    def exist(self, session_id: str, *keys: str) -> None:
        """Note keys of this manager's session that exist: a walk of the session declares them at once."""
        if session_id == self.session_id:
            self.known.update(dict.fromkeys(keys))

    def exist_agent(self, session_id: str, agent_id: str) -> None:
        """Note an agent of this manager's session: its record, message-id ZSET and lock keys."""
        suffix = self.keys.agent_suffix(agent_id)
        keys = (self.keys.messages(session_id, agent_id), self.keys.lock(session_id, suffix))
        self.exist(session_id, self.keys.agent(session_id, agent_id), *keys)

    async def lock_on(self, io: Driver, operation: str, member: Member, args: list[Any]) -> Any:
        """Run lua/lock.lua on a member of the session for the session lock (lock.py)."""
        with _errors(operation, member.lock_key):
            return await scripts.run_on(scripts.LOCK, io, member.keys, args, ttl_ms=self.ttl_ms, known=self.known)

    async def keep_alive(self, io: Driver, due_ms: int, extend_ms: int) -> None:
        """Run lua/keep_alive.lua: a running invocation's heartbeat (invocation.py), every key it knows declared."""
        keys = [self.keys.session(self.session_id), self.keys.index(self.session_id)]
        with _errors("keep the session alive", keys[0]):
            known, walk = self.known, list(self.known)  # list(): one step, while the agent's thread adds keys
            self.deadline = None  # it may move: the next append is a script, which says where to
            await scripts.run_on(
                scripts.KEEP_ALIVE, io, keys, [due_ms, extend_ms], ttl_ms=self.ttl_ms, walk=walk, known=known
            )
        telemetry.refreshed()
        self.listing.kept_alive(extend_ms)

    async def open_session(self, io: Driver) -> tuple[Session, bool]:
        """Read this manager's session, creating it if there is none: what the SDK's constructor does, awaited.

        Returns the session and whether it was created here. One created meanwhile by another process is joined:
        read again (its owner checked).
        """
        session = await self.read_session(io, self.session_id)
        if session is not None:
            return session, False
        session = await self.create_session(io, Session(session_id=self.session_id, session_type=SessionType.AGENT))
        if not self.joined_existing:
            return session, True
        self.joined_existing = False
        return await self.read_session(io, self.session_id) or session, False

    async def create_session(self, io: Driver, session: Session) -> Session:
        """Create a new session; ``SessionException`` if it exists (unless it was created meanwhile, as it opens)."""
        key = self.keys.session(session.session_id)
        expiry = ("PX", self.ttl_ms) if self.ttl_ms else ()
        record = codec.encode(session)
        if self.owner is not None and session.session_id == self.session_id:  # extra field: bound to its owner
            record = codec.dumps({**codec.to_dict(session), "owner": self.owner})
        with _errors("create session", key):
            command = ("SET", key, self.values.seal(key, record), "NX", *expiry)
            created = await replication.execute_on(io, key, command, self.replica_wait)
        if not created:
            if not self.opening:
                raise SessionException(f"Session {session.session_id} already exists")
            logger.debug("session_id=<%s> | session created concurrently, joining it", session.session_id)
            self.joined_existing = True
        return session

    async def read_session(self, io: Driver, session_id: str) -> Session | None:
        """Read a session record, or ``None``.

        Opening the manager's own session also reads its index in the same round trip, so that a walk of the
        whole session (a due TTL refresh, a delete on logout) declares its members at once and has only
        their messages left to learn; and its deadline and the server's clock, for the plain-command writes.
        """
        key = self.keys.session(session_id)
        opening = self.opening and session_id == self.session_id
        commands: list[tuple[str, ...]] = [("GET", key)]
        if opening:
            commands += [("SMEMBERS", self.keys.index(session_id)), ("PEXPIRETIME", key), ("TIME",)]
        with _errors("read session", key):
            sent = time.monotonic()
            raw, *opened = await replication.read_on(io, key, *commands, **{NEVER_DECODE: True})  # values are bytes
        if opened:
            index, deadline, (seconds, micros) = opened
            for member in index:
                self.exist_member(session_id, member.decode() if isinstance(member, bytes) else member)
            self.deadline = deadline if deadline != -2 else None
            # The server read its clock after `sent`: taken as read at `sent`, the estimate of its clock is never
            # behind it (a refresh is judged due a round trip early at most, never late). Elapsed time is this
            # host's monotonic clock: a step of its wall clock (NTP, a migrated VM) changes nothing.
            self.clock_ms = int(seconds) * 1000 + int(micros) / 1000 - sent * 1000  # GLIDE: as the server sent them
        record = (
            None if raw is None else codec.load_record(Session, raw, key, self.values)
        )  # a foreign value: said so first
        if opened:
            self.check_owner(key, raw)  # before anything is written
            if raw is None and index:
                await self._purge_remnants(io, session_id)
        return record

    async def _purge_remnants(self, io: Driver, session_id: str) -> None:
        """Delete what a session without a record left (lua/delete_session.lua 'remnants'), before it is created.

        Keys under an index but no record are the remnants of a session that is gone: a delete that stopped
        after its first step, an append killed between its block and its settle after another process's delete,
        a record evicted alone. A session created over them would show them (an old message in a new
        conversation), so opening it deletes them first; nothing, if the record exists by then.
        """
        key = self.keys.session(session_id)
        with _errors("delete session remnants", key):
            purged = await self.script(io, scripts.DELETE_SESSION, session_id, [], ["remnants"], walk=list(self.known))
        self.known.clear()
        logger.debug("session_id=<%s>, keys=<%d> | deleted the remnants of a session that is gone", session_id, purged)

    def exist_member(self, session_id: str, suffix: str) -> None:
        """Note a member of the session index (``agent:<id>``, ``multi_agent:<id>``); others are ignored."""
        parsed = parse_suffix(suffix)
        if parsed is not None and parsed[0] == AGENT:
            self.exist_agent(session_id, parsed[1])
        elif parsed is not None and parsed[0] == MULTI_AGENT:
            self.exist(session_id, self.keys.member(session_id, suffix), self.keys.lock(session_id, suffix))

    # -- deletion ---------------------------------------------------------------------------

    async def delete_session(self, io: Driver, session_id: str) -> int:
        """Delete every key of the session in one atomic step; return how many went (0: there was no session).

        A manager that wrote (or restored) messages of the session knows its keys: it declares them, and
        lua/delete_session.lua checks them by walking the session, in one round trip. Any other (a new one, on
        logout) deletes with plain commands (:meth:`_delete_watched`), in two, which costs the server less
        than the walk; when the session is not as a plain delete expects, by the script, which says why.
        """
        key = self.keys.session(session_id)
        known = list(self.known) if session_id == self.session_id else []
        with _errors("delete session", key):
            deleted = None if self._knows_messages(known) else await self._delete_watched(io, session_id, known)
            if deleted is None:
                deleted = await self._delete_by_script(io, session_id, known)
        if session_id == self.session_id:
            self.known.clear()
        return deleted

    async def _delete_by_script(self, io: Driver, session_id: str, known: list[str]) -> int:
        """Delete the session by lua/delete_session.lua: atomically, or record first while writers outrun it."""

        async def call(args: list[Any], walk: list[str]) -> int:
            deleted: int = await self.script(io, scripts.DELETE_SESSION, session_id, [], args, walk=walk)
            return deleted

        return await scripts.delete_session(call, known)

    def _knows_messages(self, known: list[str]) -> bool:
        """Whether the ``known`` keys of a session include a message: this manager wrote or restored some."""
        return any((parsed := self.keys.parse(key)) is not None and parsed.kind == MESSAGE for key in known)

    async def _delete_watched(self, io: Driver, session_id: str, known: list[str]) -> int | None:
        """Delete the session as an optimistic transaction; returns how many keys went, or None: use the script.

        On one connection: ``WATCH`` the record, the index and the message-id ZSETs of the agents ``known``
        names (a new manager read the index as it opened), and read them (a member it did not know: one more
        round trip, for its ids); then ``DEL`` every key in ``MULTI``/``EXEC``. Every write that adds a key to
        a session changes one of the watched keys (a message its ZSET, a member the index), and so does a
        delete, an expiry or a new session under the same id: ``EXEC`` then runs nothing, and it starts again
        (twice at most). The record was this library's when ``EXEC`` ran. Not tried with ``wait_replicas``
        (the script waits for replicas); not possible for a record that is absent or foreign, a key of another
        type, ``WATCH`` refused (an ACL rule without it), a slot in motion or a connection lost (the script
        retries as the client is set to): the script.
        """
        if self.replica_wait is not None or not io.pins:  # GLIDE: no connection to hold (driver_glide.py)
            return None
        try:
            return await self._delete_watched_once(io, session_id, known)
        except (ValkeyConnectionError, ValkeyTimeoutError) as error:  # the connection was closed, not pooled
            logger.debug(
                "session_id=<%s> | plain delete lost its connection (%s), deleting by script", session_id, error
            )
            return None

    async def _delete_watched_once(self, io: Driver, session_id: str, known: list[str]) -> int | None:
        """:meth:`_delete_watched`, connection errors raised."""
        key, index = self.keys.session(session_id), self.keys.index(session_id)
        agents = [parsed.member_id for parsed in map(self.keys.parse, known) if parsed and parsed.kind == MESSAGES]
        for _ in range(3):
            async with io.pinned(key) as send:
                read = await self._watch(send, session_id, [key, index], agents, ("GET", key), ("SMEMBERS", index))
                if read is None or read[0] is None or not self._is_session_record(read[0], session_id):
                    return None
                suffixes = [parse_suffix(member.decode("utf-8", "replace")) for member in read[1]]
                members = [(found[0], found[1]) for found in suffixes if found and found[0] in (AGENT, MULTI_AGENT)]
                if len(members) < len(suffixes):
                    return None  # a member this library does not write: the script's walk says what it is
                ids = dict(zip(agents, read[2:], strict=True))
                new = [member_id for kind, member_id in members if kind == AGENT and member_id not in ids]
                later = await self._watch(send, session_id, [], new) if new else []
                if later is None:
                    return None
                ids.update(zip(new, later, strict=True))
                try:
                    agents_ids = {
                        agent_id: [int(n) for n in ids[agent_id]] for kind, agent_id in members if kind == AGENT
                    }
                except ValueError:  # a member of a ZSET that is no message id
                    return None
                multi_agents = [member_id for kind, member_id in members if kind == MULTI_AGENT]
                keys = self.keys.every_key(session_id, agents_ids, multi_agents)
                *_, done = await send([("MULTI",), ("DEL", *keys), ("EXEC",)])
            if done is None:
                logger.debug("session_id=<%s> | the session changed while a delete read it: again", session_id)
                continue
            return None if isinstance(done, Exception) else int(done[0])
        return None

    async def _watch(
        self, send: Any, session_id: str, keys: list[str], agents: list[str], *reads: tuple[Any, ...]
    ) -> list[Any] | None:
        """``WATCH`` ``keys`` and the agents' message-id ZSETs, run ``reads``, read the ids: one round trip.

        Returns the replies of ``reads``, then each agent's ids; None if anything was refused.
        """
        zsets = [self.keys.messages(session_id, agent_id) for agent_id in agents]
        replies = await send([("WATCH", *keys, *zsets), *reads, *(("ZRANGE", zset, 0, -1) for zset in zsets)])
        return None if any(isinstance(reply, Exception) for reply in replies) else replies[1:]

    @staticmethod
    def _is_session_record(raw: bytes, session_id: str) -> bool:
        """Whether ``raw`` is a session record of this library: a JSON object naming the session, or sealed.

        lua/session.lua's ``foreign`` makes the same check in a script.
        """
        if Values.is_sealed(raw):
            return True
        try:
            record = json.loads(raw)
        except ValueError:
            return False
        return isinstance(record, dict) and record.get("session_id") == session_id

    # -- records ----------------------------------------------------------------------------

    async def write_record(
        self,
        io: Driver,
        operation: str,
        session_id: str,
        key: str,
        record: codec.Encodable,
        walk: Sequence[str] = (),
        **how: str,
    ) -> tuple[str, bytes]:
        """Create or update one JSON record; returns the ``created_at`` it was stored with, and what was stored.

        ``walk``: keys a due TTL refresh will need that the caller knows of (an agent's message ids).
        A sealed value (values.py) is opaque to the script, which cannot keep the stored ``created_at``: an update
        sends the one stored, as this manager last stored or read it, or read first (a redaction, as
        FileSessionManager reads first).
        """
        data = codec.to_dict(record)
        mode, suffix, not_found = how.get("mode", "create"), how.get("suffix", ""), how.get("not_found", "")
        if self.values.sealing:
            if mode == "update" and "created_at" in data:
                data = {**data, "created_at": await self._stored_created_at(io, operation, key, not_found)}
            created_at, body = b"", self.values.seal(key, codec.dumps(data))
        else:
            created_at, body = codec.split_created_at(data) if "created_at" in data else (b"", codec.dumps(data))
            self.values.bound(key, len(created_at) + len(body) + 14)  # as joined: {"created_at":<created_at><body>
        with _errors(operation, key, not_found):
            args = [mode, suffix, created_at, body]
            stored, deadline = await self.script(io, scripts.WRITE_RECORD, session_id, [key], args, walk=list(walk))
        if session_id == self.session_id:
            self.deadline = deadline
            self.listing.wrote(deadline)
        telemetry.wrote(telemetry.SCRIPT, 0, len(created_at) + len(body))
        logger.debug("session_id=<%s>, key=<%s> | %s", session_id, key, operation)
        if not stored:
            return str(data.get("created_at", "")), body
        stored = codec.as_bytes(stored)
        return str(json.loads(stored)), b'{"created_at":' + stored + body

    async def _stored_created_at(self, io: Driver, operation: str, key: str, not_found: str) -> str:
        """Return the ``created_at`` of a stored record: as this manager last stored or read it, or read (a round trip).

        ``not_found`` (a ``SessionException``) if the record does not exist.
        """
        raw = self.stored.get(key)
        if raw is None:
            with _errors(operation, key):
                (raw,) = await replication.read_on(io, key, ("GET", key), **{NEVER_DECODE: True})
            if raw is None:
                raise SessionException(not_found or f"key=<{key}> | {operation} refused: the record does not exist")
        return str(codec.loads(raw, key, self.values).get("created_at", ""))

    async def read_record(
        self, io: Driver, operation: str, session_id: str, key: str, walk: Sequence[str] = ()
    ) -> bytes | str | None:
        """Read one record, sliding the session's expiry if it is due (``walk`` as for ``_write_record``)."""
        with _errors(operation, key):
            raw: bytes | str | None = await self.script(
                io, scripts.READ_RECORD, session_id, [key], [], write=False, walk=list(walk), raw=True
            )
        if self.lock is not None:
            self.lock.saw(key, raw)
        return raw

    async def _update_plain(self, io: Driver, session_id: str, key: str, session_agent: SessionAgent) -> bool:
        """Update a known agent of this session with one ``SET ... IFEQ <what we stored> KEEPTTL``, if it can.

        ``IFEQ`` (Valkey 8.1+) writes only over the exact bytes this manager last stored or read there, so only
        into this library's record (never over a value it did not write, not even for a moment), only into a
        live session (a record exists only with its session; a delete takes every key at once), and never over
        another writer's newer update; ``KEEPTTL`` keeps the session's deadline, so only while no refresh is due.
        Anything else (the value changed, a server without ``IFEQ``: Valkey 8.0, Redis OSS 7) goes through the
        script (lua/write_record.lua), which reads before it writes. Returns False then (nothing was changed).
        """
        previous = self.stored.get(key)
        if session_id != self.session_id or previous is None or io.client in _NO_IFEQ:
            return False
        if self.fresh_deadline() is None:
            return False
        created_at = codec.created_at_of(previous, key, self.values)
        if not created_at:
            return False
        plain = b'{"created_at":' + created_at + codec.split_created_at(codec.to_dict(session_agent))[1]
        value = self.values.seal(key, plain)
        sent = time.monotonic()
        with _errors("update agent", key):
            try:
                command = ("SET", key, value, "IFEQ", previous, "KEEPTTL")
                written = await replication.execute_on(io, key, command, self.replica_wait)
            except ResponseError as error:
                if "syntax" in str(error).lower():  # no IFEQ on this server: the script, from now on
                    _NO_IFEQ.add(io.client)
                    return False
                if str(error).startswith("WRONGTYPE"):
                    return False  # nothing written: the script names the key and what it holds
                raise
        if not written:
            return False  # not what this manager last saw there: the script reads it and says what to do
        self.stored[key] = value
        session_agent.created_at = json.loads(created_at)
        self.heartbeat.refreshed = sent  # the session had over 0.9 ttl left, as after a script
        telemetry.wrote(telemetry.PLAIN, 0, len(value))
        return True

    # -- messages ---------------------------------------------------------------------------

    async def append(self, io: Driver, session_id: str, agent_id: str, batch: list[tuple[int, bytes]]) -> None:
        """Write messages of one agent atomically; a different message under a used id is refused."""
        message_keys = self.keys.message_keys(session_id, agent_id, [message_id for message_id, _ in batch])
        keys = [self.keys.messages(session_id, agent_id), *message_keys]
        pairs = [item for message_id, raw in batch for item in (message_id, raw)]
        with _errors("append message", keys[-1]):
            plain = await self._append_plain(io, session_id, agent_id, batch, keys)
            if not plain:
                previous = str(batch[0][0] - 1) if batch[0][0] > 0 else ""  # how the script knows the agent
                args = [self.keys.agent_suffix(agent_id), previous, *pairs]
                deadline = await self.script(io, scripts.APPEND_MESSAGES, session_id, keys, args)
                if session_id == self.session_id:
                    self.deadline = deadline
        self.exist(session_id, *keys)
        telemetry.wrote(telemetry.PLAIN if plain else telemetry.SCRIPT, len(batch), sum(len(raw) for _, raw in batch))
        logger.debug("session_id=<%s>, agent_id=<%s>, message_id=<%d> | appended", session_id, agent_id, batch[-1][0])

    async def _append_plain(
        self, io: Driver, session_id: str, agent_id: str, batch: list[tuple[int, bytes]], keys: list[str]
    ) -> bool:
        """Append an agent's next message with plain commands in one ``MULTI``/``EXEC``, if no refresh is due.

        For one message of an agent of this session whose previous message this manager wrote or read, while
        the session's deadline is known and not due: ``SET NX GET PXAT`` the message with that deadline, ``ZADD``
        its id, ``SADD`` the agent to the index, ``PEXPIREAT ... NX`` the ZSET and the index (a key this block
        re-creates, after an eviction or a delete, gets the deadline too), and read the session's
        ``PEXPIRETIME``, all or nothing. Whatever happens after the block, every key it wrote has a deadline and
        is reachable from the index. The block checks nothing before it writes, so what the script would have
        refused is found in the replies and undone: a different message under that id (``SET NX`` wrote
        nothing: CONFLICT), a key of another type (BADVALUE: what did run is taken back). A deadline other than
        the one written (another process moved it, a new session under the id, or the session is gone) is
        settled by lua/settle_append.lua: the keys get the session's deadline, or the append is taken back
        (NOSESSION); a ``WAIT`` shortfall is raised after that. Returns False when the script must write
        (nothing was sent).
        """
        deadline = self.fresh_deadline()
        if session_id != self.session_id or len(batch) != 1 or deadline is None:
            return False
        ((message_id, raw),) = batch
        if self.keys.message(session_id, agent_id, message_id - 1) not in self.known:
            return False
        ids_key, key = keys
        session_key, index_key = self.keys.session(session_id), self.keys.index(session_id)
        suffix = self.keys.agent_suffix(agent_id)
        block = replication.Transaction(
            (
                ("SET", key, raw, "NX", "GET", "PXAT", deadline),
                ("ZADD", ids_key, message_id, message_id),
                ("PEXPIREAT", ids_key, deadline, "NX"),
                ("SADD", index_key, suffix),
                ("PEXPIREAT", index_key, deadline, "NX"),
                ("PEXPIRETIME", session_key),
            )
        )
        sent = time.monotonic()
        shortfall = None
        options = {NEVER_DECODE: True}  # what SET GET found may be a sealed value: bytes (values.py)
        try:
            replies = await replication.execute_on(io, session_key, block, self.replica_wait, **options)
        except replication.ReplicasNotAcknowledged as short:  # the block ran: settle it first, then say so
            (replies,), shortfall = short.replies, short
        stored, added, ids_expiring, indexed, index_expiring, found = replies
        if any(isinstance(reply, ResponseError) for reply in (stored, added, indexed)):
            undo = [
                *((("DEL", key),) if stored is None else ()),
                *((("ZREM", ids_key, message_id),) if added == 1 else ()),
                *((("SREM", index_key, suffix),) if indexed == 1 else ()),
                *((("PERSIST", ids_key),) if isinstance(added, ResponseError) and ids_expiring == 1 else ()),
                *((("PERSIST", index_key),) if isinstance(indexed, ResponseError) and index_expiring == 1 else ()),
            ]
            if undo:
                await replication.execute_on(io, session_key, replication.Transaction(tuple(undo)), None)
            written = ((key, stored), (ids_key, added), (index_key, indexed))
            bad_key, refusal = next((k, r) for k, r in written if isinstance(r, ResponseError))
            raise ResponseError(f"{errors.BADVALUE} {bad_key} {refusal}")
        if stored is not None and codec.as_bytes(stored) != raw:
            raise ResponseError(f"{errors.CONFLICT} {key}")  # SET NX wrote nothing
        if found != deadline:
            self.deadline = None  # until the settle says where it is: a write that fails meanwhile is a script
            args = [message_id, raw, suffix, int(added == 1), int(indexed == 1)]
            found = await self.script(io, scripts.SETTLE_APPEND, session_id, keys, args)
        self.deadline = found
        self.heartbeat.refreshed = sent  # the session had over 0.9 ttl left, as after a script
        if shortfall is not None:
            raise shortfall
        return True

    def server_ms(self) -> float | None:
        """Return the server's clock (ms) as estimated here (read_session), never behind it; ``None``: not known."""
        return None if self.clock_ms is None else time.time() * 1000 + self.clock_ms

    def fresh_deadline(self) -> int | None:
        """Return the session's deadline if an append may go as plain commands: a deadline, no lock, none due.

        Due as the scripts judge it (lua/session.lua's life(): under 0.9 ttl left), on the server's clock as
        estimated from its ``TIME`` read when the manager opened (read_session) plus the time elapsed since on
        this host's monotonic clock: a step of this host's wall clock changes nothing. Not without a ttl or in a
        session without a deadline (-1): a block that a crash cuts off from its settle must leave keys that
        expire (architecture.md).
        """
        deadline, clock = self.deadline, self.clock_ms
        if deadline is None or deadline < 0 or clock is None or self.lock is not None or not self.ttl_ms:
            return None
        if deadline - (time.monotonic() * 1000 + clock) >= 0.9 * self.ttl_ms:
            return deadline
        return None

    async def create_message(
        self, io: Driver, session_id: str, agent_id: str, message: SessionMessage, plain: bytes
    ) -> None:
        """Append a message (``plain``: its JSON) in one round trip; identical content under its id is a retry.

        If an earlier append of the agent failed (timeout, dropped connection, failover, out of memory: anything
        but a refusal by the script), that message is re-sent first, byte for byte, in the same atomic write:
        message ids stay gap-free, nothing the agent holds goes missing from the store, and a write that did land
        after all is recognised as done, not as a conflict. A message is sealed (values.py) once: re-sent, it is
        the same bytes; a caller's own retry reuses the bytes still pending, and one stored is recognised by its
        content.
        """
        message_id = message.message_id
        key = self.keys.message(session_id, agent_id, message_id)
        pending = self.unconfirmed.pop((session_id, agent_id), [])
        again = [raw for number, raw in pending if number == message_id and self.values.open(key, raw) == plain]
        record = (message_id, again[0] if again else self.values.seal(key, plain))
        batch = [*(item for item in pending if not (again and item[0] == message_id)), record]
        telemetry.retried(len(batch) - 1)
        try:
            await self.append(io, session_id, agent_id, batch)
        except SessionException as error:
            if len(batch) == 1 and await self._stored_as_is(io, error, key, plain):
                return
            if not errors.refused(error.__cause__):  # failed on the wire, not refused by the script: re-send
                self.unconfirmed[session_id, agent_id] = batch
                logger.debug(
                    "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | append unconfirmed, will re-send",
                    session_id,
                    agent_id,
                    [message_id for message_id, _ in batch],
                )
            raise
        if session_id == self.session_id:
            self.listing.wrote(self.deadline, message)

    async def _stored_as_is(self, io: Driver, error: SessionException, key: str, plain: bytes) -> bool:
        """Whether a conflict on ``key`` is this very message, stored sealed before (so in other bytes)."""
        cause = error.__cause__
        if not self.values.sealing or not isinstance(cause, ResponseError):
            return False
        if errors.error_code(cause) != (errors.CONFLICT, key):
            return False
        with _errors("append message", key):
            (stored,) = await replication.read_on(io, key, ("GET", key), **{NEVER_DECODE: True})
        return stored is not None and self.values.open(key, stored) == plain

    async def list_messages(
        self, io: Driver, session_id: str, agent_id: str, limit: int | None, offset: int
    ) -> list[SessionMessage]:
        """List an agent's messages by id, as FileSessionManager does: two round trips, two commands.

        A message listed in the index but missing from Valkey (evicted, deleted by hand, or of another Valkey
        type) is logged as a warning naming its id, and the rest are returned.
        """
        agent_key = self.keys.agent(session_id, agent_id)
        ids_key = self.keys.messages(session_id, agent_id)
        python_slice = offset < 0 or (limit is not None and limit < 0)  # rare: keep list-slice semantics
        start, stop = (0, -1) if python_slice else (offset, -1 if limit is None else offset + limit - 1)
        with _errors("list messages", ids_key):
            agent_exists, ids = await replication.read_on(
                io, ids_key, ("EXISTS", agent_key), ("ZRANGE", ids_key, start, stop)
            )
        if not agent_exists and not ids:
            raise SessionException(f"Agent {agent_id} in session {session_id} does not exist")
        if python_slice:
            ids = ids[offset:] if limit is None else ids[offset : offset + limit]
        if limit == 0 or not ids:
            return []
        try:
            numbers = list(map(int, ids))
        except ValueError as error:
            raise SessionException(f"key=<{ids_key}> | list messages failed: a member is not a message id") from error
        keys = self.keys.message_keys(session_id, agent_id, numbers)
        with _errors("list messages", ids_key):  # bytes whatever the client decodes: the codec names a bad key
            (values,) = await replication.read_on(io, ids_key, ("MGET", *keys), **{NEVER_DECODE: True})
        if None in values:  # (a scan in C: the usual case, none missing, builds no other list)
            missing = [number for number, raw in zip(numbers, values, strict=True) if raw is None]
            keys, values = (
                [key for key, raw in zip(keys, values, strict=True) if raw is not None],
                [raw for raw in values if raw is not None],
            )
            logger.warning(
                "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | messages listed in %s are missing from "
                "Valkey (evicted, deleted or of another type); restoring the others",
                session_id,
                agent_id,
                missing,
                ids_key,
            )
        self.exist(session_id, ids_key, *keys)
        telemetry.restored(len(keys))
        return codec.load_messages(keys, values, self.values)

    # -- agents and multi-agents -------------------------------------------------------------

    async def read(self, io: Driver, key: str) -> bytes | None:
        """Read one value as it is stored (bytes, whatever the client decodes), or ``None``."""
        (raw,) = await replication.read_on(io, key, ("GET", key), **{NEVER_DECODE: True})
        return raw  # type: ignore[no-any-return]

    async def prefetch(self, io: Driver, agent_id: str) -> tuple[bytes | str | None, tuple[int, list[SessionMessage]]]:
        """Read what restoring the agent reads: its record and, if it exists, its messages (else ``(0, [])``).

        The messages from the offset its conversation manager will ask for (the messages it removed, as stored).
        """
        key = self.keys.agent(self.session_id, agent_id)
        walk = [self.keys.messages(self.session_id, agent_id)]
        raw = await self.read_record(io, "read agent", self.session_id, key, walk)
        if raw is None:
            return None, (0, [])
        state = codec.load_record(SessionAgent, raw, key, self.values).conversation_manager_state
        offset = state.get("removed_message_count", 0) if isinstance(state, dict) else 0
        offset = offset if isinstance(offset, int) and offset >= 0 else 0
        return raw, (offset, await self.list_messages(io, self.session_id, agent_id, None, offset))

    async def create_agent(self, io: Driver, session_id: str, session_agent: SessionAgent) -> None:
        """Create (or overwrite) an agent's record; note it and what was stored."""
        agent_id = session_agent.agent_id
        key = self.keys.agent(session_id, agent_id)
        suffix = self.keys.agent_suffix(agent_id)
        self.stored[key] = (await self.write_record(io, "create agent", session_id, key, session_agent, suffix=suffix))[
            1
        ]
        self.exist_agent(session_id, agent_id)

    async def update_agent(self, io: Driver, session_id: str, session_agent: SessionAgent) -> None:
        """Update an existing agent, keeping its stored ``created_at``: plain if it can, else by the script."""
        agent_id = session_agent.agent_id
        key = self.keys.agent(session_id, agent_id)
        if await self._update_plain(io, session_id, key, session_agent):
            return
        not_found = f"Agent {agent_id} in session {session_id} does not exist"
        ids = [self.keys.messages(session_id, agent_id)]
        session_agent.created_at, self.stored[key] = await self.write_record(
            io, "update agent", session_id, key, session_agent, ids, mode="update", not_found=not_found
        )

    async def update_message(self, io: Driver, session_id: str, agent_id: str, session_message: SessionMessage) -> None:
        """Update an existing message (a redaction), keeping its ``created_at``."""
        message_id = session_message.message_id
        key = self.keys.message(session_id, agent_id, message_id)
        not_found = f"Message {message_id} does not exist"
        session_message.created_at, _ = await self.write_record(
            io, "update message", session_id, key, session_message, mode="update", not_found=not_found
        )

    async def create_multi_agent(self, io: Driver, session_id: str, multi_agent_id: str, state: Any) -> None:
        """Create (or overwrite) a Swarm's or Graph's state."""
        key = self.keys.multi_agent(session_id, multi_agent_id)
        suffix = self.keys.multi_agent_suffix(multi_agent_id)
        await self.write_record(io, "create multi-agent", session_id, key, state, suffix=suffix)
        self.exist(session_id, key, self.keys.lock(session_id, suffix))

    async def read_multi_agent(self, io: Driver, session_id: str, multi_agent_id: str) -> dict[str, Any] | None:
        """Read a Swarm's or Graph's state, or ``None``; slides the session's expiry."""
        key = self.keys.multi_agent(session_id, multi_agent_id)
        raw = await self.read_record(io, "read multi-agent", session_id, key)
        if raw is None:
            return None
        self.exist(session_id, key, self.keys.lock(session_id, self.keys.multi_agent_suffix(multi_agent_id)))
        return codec.loads(raw, key, self.values)

    async def update_multi_agent(self, io: Driver, session_id: str, multi_agent_id: str, state: Any) -> None:
        """Update an existing Swarm's or Graph's state; ``SessionException`` if it was never created.

        As FileSessionManager, which checks that the state exists before it writes: a state that cannot be
        stored (not a dict, not JSON) is "does not exist" for an unknown id, and its own error otherwise.
        """
        key = self.keys.multi_agent(session_id, multi_agent_id)
        not_found = f"MultiAgent state {multi_agent_id} in session {session_id} does not exist"
        try:
            if not isinstance(state, dict):
                raise TypeError(
                    f"multi_agent_id=<{multi_agent_id}> | serialize_state() returned {type(state).__name__}, not a dict"
                )
            await self.write_record(
                io, "update multi-agent", session_id, key, state, mode="update", not_found=not_found
            )
        except (TypeError, ValueError):  # refused before anything was sent
            with _errors("update multi-agent", key):
                (exists,) = await replication.read_on(io, key, ("EXISTS", key))
            if not exists:
                raise SessionException(not_found) from None
            raise
