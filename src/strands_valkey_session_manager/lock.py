"""The session lock: one invocation at a time per (session, agent), across threads, processes and hosts.

Opt-in with ``ValkeySessionManager(..., lock_timeout=seconds)``. Each invocation of an agent (or of
a Swarm/Graph whose session manager this is) first takes a lease on that member of the session, the
key ``session:<id>:lock:agent:<agent_id>`` (``...:lock:multi_agent:<id>``), in ``lua/lock.lua``:

- Acquire sets the key to a random token if it is free. A caller that finds it taken tries again
  after a jittered, exponentially growing sleep (``backoff``) until ``lock_timeout`` has passed, then
  raises ``SessionBusyError``. A busy attempt is 2 server commands (``FCALL``, ``EXISTS``); a
  waiter makes at most ``max_attempts(t)`` attempts in ``t`` seconds, i.e. at most 4 a second (8
  commands) once the sleeps reach their 0.5 s ceiling, 2.7 a second on average.
- The lease expires after ``lock_lease`` seconds unless renewed: the manager's heartbeat (invocation.py,
  on the process's keep-alive thread) renews it every ``lock_lease / 3`` seconds while the invocation
  runs (``ttl / 3`` if the session's ttl is shorter: a lease never ends after its session; sooner if the
  session's keep-alive beats sooner), and the renewal keeps the session alive too.
  Renew and release compare the token first; when the session itself is gone they say so.
- Fencing: while the lease is held, the manager's writes to that member carry the lock key and the
  token, and the write scripts refuse them (``FENCED``) once the token no longer holds the lock.
- Handover: acquire returns the member's fingerprint (the SHA1 of its record, its newest message id).
  If it is not what this process last saw (a release, or its own read of the record), the member is
  read again from the session before the invocation runs, so it continues the previous holder's turn.

The lock is taken around the agent's (or orchestrator's) ``stream_async`` (invocation.py says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strands.types.exceptions import SessionException

from . import codec, errors, telemetry
from .keys import KeySchema
from .options import MAX_TTL, number

if TYPE_CHECKING:
    from strands.multiagent.base import MultiAgentBase
    from strands.types.agent import LocalAgent

logger = logging.getLogger(__name__)

#: The first sleep between two attempts to take a busy lock, and the ceiling it doubles up to (s).
FIRST_DELAY = 0.05
MAX_DELAY = 0.5

#: A member's fingerprint: the SHA1 of its record ('' = none) and its newest message id ('' = none).
Fingerprint = tuple[str, str]

#: Runs lua/lock.lua on a member: (operation for error messages, member, ARGV after the ttl) -> its reply.
Runner = Callable[[str, "Member", list[Any]], Any]
#: The same, awaited (an asyncio client's manager awaits it on the invoking loop: manager._await).
AsyncRunner = Callable[[str, "Member", list[Any]], Awaitable[Any]]


class SessionBusyError(SessionException):
    """Another invocation held the lock of this session's agent (or Swarm/Graph) past ``lock_timeout``."""

    def __init__(self, session_id: str, member: str, waited: float, timeout: float) -> None:
        """Describe which session and member were busy, and for how long the caller waited."""
        self.session_id = session_id
        self.agent_id = member
        self.waited = waited
        super().__init__(
            f"session_id=<{session_id}>, agent_id=<{member}> | session busy: another invocation holds its lock; "
            f"gave up after waiting {waited:.2f}s (lock_timeout={timeout:g}s), nothing was written. Retry "
            "later, or raise lock_timeout if invocations of this session routinely take longer."
        )


def backoff(rng: random.Random) -> Iterator[float]:
    """Sleeps between attempts: FIRST_DELAY doubling up to MAX_DELAY, each drawn from [delay/2, delay]."""
    delay = FIRST_DELAY
    while True:
        yield rng.uniform(delay / 2, delay)
        delay = min(delay * 2, MAX_DELAY)


def max_attempts(timeout: float) -> int:
    """Return the most attempts a caller makes waiting ``timeout`` seconds for a busy lock.

    Every sleep lasts at least half its delay, but for a last one cut short by the deadline.
    """
    attempts, slept, delay = 1, 0.0, FIRST_DELAY
    while slept + delay / 2 <= timeout:
        slept += delay / 2
        attempts += 1
        delay = min(delay * 2, MAX_DELAY)
    return attempts + 1


def sha1(raw: bytes | str | None) -> str:
    """Return what a Lua script's ``redis.sha1hex`` gives for a stored value ('' for none)."""
    if raw is None:
        return ""
    return hashlib.sha1(codec.as_bytes(raw)).hexdigest()


def no_messages() -> str:
    """Return the newest message id of a member without messages (a Swarm/Graph): none."""
    return ""


@dataclass
class Member:
    """A member of the session that invocations lock: an agent, or a Swarm/Graph, and its keys."""

    id: str
    session_key: str
    index_key: str
    lock_key: str  # the lease: session:<id>:lock:agent:<agent_id> (or ...:lock:multi_agent:<id>)
    record_key: str  # its record; its other keys (messages) start with this and ``:``
    ids_key: str | None  # an agent's message-id ZSET (None for a Swarm/Graph)
    reload: Callable[[], Any]  # read it again from the session: state, messages (may return an awaitable)
    newest: Callable[[], str] = no_messages  # the newest message id this process knows of it ('' = none)
    seen: Fingerprint | None = None  # its fingerprint when this process last read or released it

    @property
    def keys(self) -> list[str]:
        """lua/lock.lua's KEYS: session, index, lock key, record key[, message-id ZSET]."""
        keys = [self.session_key, self.index_key, self.lock_key, self.record_key]
        return keys if self.ids_key is None else [*keys, self.ids_key]


class Lease:
    """A held lock: its member and token, shared by invocations of the same object, renewed by the heartbeat."""

    def __init__(self, member: Member, token: str) -> None:
        """Hold a lease just acquired."""
        self.member = member
        self.token = token
        self.depth = 1  # invocations of the same object sharing it (the SDK decides if they may run)
        self.renewed = time.monotonic()  # when it was last taken or renewed
        self.lost = False  # it ran out unrenewed: the holder's writes are refused (FENCED)


#: Every SessionLock of this process, reset in a forked child (a child holds none of its parent's leases).
_LOCKS: weakref.WeakSet[SessionLock] = weakref.WeakSet()


class SessionLock:
    """The locks one session manager takes: waiting, renewing, fencing, releasing, handing over."""

    def __init__(
        self,
        run: Runner,
        keys: KeySchema,
        session_id: str,
        timeout: float,
        lease: float,
        ttl_ms: int,
        run_async: AsyncRunner | None = None,
    ) -> None:
        """Check the settings; nothing is sent to Valkey until an invocation starts.

        ``run`` sends lua/lock.lua (the manager's client, its error translation); ``run_async`` awaits the same
        (taking and releasing, which run on the invoking loop; by default ``run``), ``keys`` names the
        members' keys. A lease never ends after its session (ttl_ms: the session's ttl, 0 = none), so with
        a ttl shorter than the lease it is renewed every ttl / 3 instead of every lease / 3.
        """
        number("lock_timeout", timeout, least=0.0, most=MAX_TTL.total_seconds())
        number("lock_lease", lease, least=0.001, most=MAX_TTL.total_seconds())
        self._run = run
        self._run_async = run_async or _awaitable(run)
        self._keys = keys
        self.session_id = session_id
        self.timeout = float(timeout)
        self._lease_ms = max(1, round(lease * 1000))
        #: Seconds between two renewals of a held lease (the heartbeat may beat sooner).
        self.renew_every = min(self._lease_ms, ttl_ms or self._lease_ms) / 3000
        self._held: dict[str, Lease] = {}  # by lock key
        self._mutex = threading.Lock()
        self._read: dict[str, str] = {}  # record key -> SHA1 of the value this process last read
        self._rng = random.Random()
        _LOCKS.add(self)

    def _forked(self) -> None:
        """In a forked child: its parent's leases are not its own (their tokens stay the parent's)."""
        self._held = {}
        self._mutex = threading.Lock()

    # -- what the manager tells it -----------------------------------------------------------

    def saw(self, record_key: str, raw: bytes | str | None) -> None:
        """Note a record's value as just read from Valkey."""
        self._read[record_key] = sha1(raw)

    def agent(self, agent: LocalAgent, reload: Callable[[], None], newest: Callable[[], str]) -> Member:
        """Return the member an agent's invocations lock; ``reload`` restores it, ``newest`` is its newest id."""
        agent_id = agent.agent_id
        ids_key = self._keys.messages(self.session_id, agent_id)
        return self._member(agent_id, self._keys.agent_suffix(agent_id), ids_key, reload, newest)

    def multi_agent(self, source: MultiAgentBase, reload: Callable[[], None]) -> Member:
        """Return the member a Swarm's or Graph's runs lock; ``reload`` restores its state."""
        return self._member(source.id, self._keys.multi_agent_suffix(source.id), None, reload)

    def _member(
        self,
        member_id: str,
        suffix: str,
        ids_key: str | None,
        reload: Callable[[], None],
        newest: Callable[[], str] = no_messages,
    ) -> Member:
        keys, session_id = self._keys, self.session_id
        session_key, index_key = keys.session(session_id), keys.index(session_id)
        lock_key, record_key = keys.lock(session_id, suffix), keys.member(session_id, suffix)
        member = Member(member_id, session_key, index_key, lock_key, record_key, ids_key, reload, newest)
        self._remember(member)
        return member

    def fence(self, key: str) -> tuple[str, str] | None:
        """Return the lock key and token that fence a write to ``key`` while its member's lock is held."""
        for lease in list(self._held.values()):
            record = lease.member.record_key
            if key == record or key.startswith(record + ":"):
                return lease.member.lock_key, lease.token
        return None

    def _operation(self, name: str, member: Member) -> telemetry.Operation:
        """Return the span and metrics of a lock operation on ``member`` (the manager's server, as its others)."""
        key = telemetry.AGENT_ID if member.ids_key is not None else telemetry.MULTI_AGENT_ID
        where = telemetry.target(getattr(self._run, "__self__", None))
        return telemetry.Operation(name, where, lambda: {key: member.id})

    # -- one invocation ----------------------------------------------------------------------

    async def enter(self, member: Member) -> Lease:
        """Take ``member``'s lock (waiting up to ``lock_timeout``), reading it again if another holder wrote it."""
        with self._mutex:
            lease = self._held.get(member.lock_key)
            if lease is not None:  # the same object is being invoked already: the SDK decides
                lease.depth += 1
                return lease
        token = uuid.uuid4().hex
        with self._operation(telemetry.LOCK_ACQUIRE, member):
            found = await self._acquire(member, token)
        lease = Lease(member, token)
        with self._mutex:
            self._held[member.lock_key] = lease
        try:
            if found != member.seen:
                logger.debug(
                    "session_id=<%s>, agent_id=<%s> | written by another invocation since we read it, reading it again",
                    self.session_id,
                    member.id,
                )
                self._read.pop(member.record_key, None)
                reloading = member.reload()
                if inspect.isawaitable(reloading):  # an asyncio client's manager reads awaited
                    await reloading
                self._remember(member)
        except BaseException:
            await self.exit(lease)
            member.seen = None  # the reload did not finish: read it again next time
            raise
        return lease

    async def _acquire(self, member: Member, token: str) -> Fingerprint:
        started = time.monotonic()
        delays = backoff(self._rng)
        while True:
            telemetry.attempted()
            reply = await self._run_async("acquire session lock", member, ["acquire", token, self._lease_ms])
            if reply is not None:
                return fingerprint(reply)
            waited = time.monotonic() - started
            if waited >= self.timeout:
                raise SessionBusyError(self.session_id, member.id, waited, self.timeout)
            logger.debug("session_id=<%s>, agent_id=<%s> | session busy, waiting", self.session_id, member.id)
            await asyncio.sleep(min(next(delays), self.timeout - waited))

    def renew_held(self, keep_alive: list[int]) -> bool:
        """Renew every lease held (the heartbeat's beat); each renewal refreshes the session if it is due.

        ``keep_alive``: ``[due_ms, extend_ms]`` to keep the session alive as lua/keep_alive.lua does (see
        ``life()`` in lua/session.lua), or ``[]`` for the idle rule. Returns whether any lease was
        renewed. A lease that could not be renewed (the server unreachable) is tried again next beat
        while it may still hold; one found gone is lost, and said so once.

        Raises:
            SessionException: If the session itself is gone (``errors.session_gone``): nothing to keep.
        """
        renewed = False
        with self._mutex:
            leases = [lease for lease in self._held.values() if not lease.lost]
        for lease in leases:
            try:
                args = ["renew", lease.token, self._lease_ms, *keep_alive]
                with self._operation(telemetry.LOCK_RENEW, lease.member):
                    reply = self._run("renew session lock", lease.member, args)
                    if keep_alive:
                        telemetry.refreshed()
            except SessionException as error:
                if errors.session_gone(error.__cause__):
                    raise
                if time.monotonic() < lease.renewed + self._lease_ms / 1000:  # it may outlive a blip
                    logger.warning("%s | could not renew the session lock, will retry", error)
                    continue
                reply = None
            if reply is not None:
                lease.renewed, renewed = time.monotonic(), True
            elif lease.depth:  # not released meanwhile
                lease.lost = True
                logger.warning(
                    "key=<%s> | lost the session lock: its lease ran out before it was renewed; this "
                    "invocation's writes are refused from now on",
                    lease.member.lock_key,
                )
        return renewed

    async def exit(self, lease: Lease) -> None:
        """Release a lease taken by ``enter`` (once the last invocation sharing it is done); never raises."""
        member = lease.member
        with self._mutex:
            lease.depth -= 1
            if lease.depth:
                return
            if self._held.get(member.lock_key) is lease:
                del self._held[member.lock_key]
        member.seen = None
        try:
            with self._operation(telemetry.LOCK_RELEASE, member):
                reply = await self._run_async("release session lock", member, ["release", lease.token])
        except SessionException as error:
            if errors.session_gone(error.__cause__):
                logger.warning("%s | nothing to release", error)
            else:
                logger.warning("%s | the lock expires by itself within lock_lease seconds", error)
            return
        if reply is None:
            logger.warning("key=<%s> | the session lock was lost before its release", member.lock_key)
            return
        member.seen = fingerprint(reply)

    def _remember(self, member: Member) -> None:
        """Take the member's fingerprint from what this process just read of it (none if it did not)."""
        read = self._read.pop(member.record_key, None)
        member.seen = None if read is None else (read, member.newest())


def _awaitable(run: Runner) -> AsyncRunner:
    async def run_async(operation: str, member: Member, args: list[Any]) -> Any:
        return run(operation, member, args)

    return run_async


def _after_fork_in_child() -> None:
    for lock in list(_LOCKS):
        lock._forked()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def fingerprint(reply: list[Any]) -> Fingerprint:
    """Read a fingerprint from lua/lock.lua's reply (strings or bytes, as the client decodes them)."""
    sha, newest = (value.decode() if isinstance(value, bytes) else str(value) for value in reply)
    return sha, newest
