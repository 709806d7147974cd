"""The session lock: one invocation at a time per (session, agent), across threads, processes and hosts.

Opt-in with ``ValkeySessionManager(..., lock_timeout=seconds)``. Each invocation of an agent (or of
a Swarm/Graph whose session manager this is) first takes a lease on that member of the session, the
key ``session:<id>:lock:agent:<agent_id>`` (``...:lock:multi_agent:<id>``), in ``lua/lock.lua``:

- Acquire sets the key to a random token if it is free. A caller that finds it taken tries again
  after a jittered, exponentially growing sleep (``backoff``) until ``lock_timeout`` has passed, then
  raises ``SessionBusyError``. A busy attempt is 2 server commands (``FCALL``, ``EXISTS``); a
  waiter makes at most ``max_attempts(t)`` attempts in ``t`` seconds, i.e. at most 4 a second (8
  commands) once the sleeps reach their 0.5 s ceiling, 2.7 a second on average.
- The lease expires after ``lock_lease`` seconds unless renewed: a thread renews it every
  ``lock_lease / 3`` seconds while the invocation runs (``ttl / 3`` if the session's ttl is shorter: a
  lease never ends after its session). Renew and release compare the token first.
- Fencing: while the lease is held, the manager's writes to that member carry the lock key and the
  token, and the write scripts refuse them (``FENCED``) once the token no longer holds the lock.
- Handover: acquire returns the member's fingerprint (the SHA1 of its record, its newest message id).
  If it is not what this process last saw (a release, or its own read of the record), the member is
  read again from the session before the invocation runs, so it continues the previous holder's turn.

The lock is taken by wrapping the agent's (or orchestrator's) ``stream_async``, which ``__call__`` and
``invoke_async`` go through: the SDK converts the prompt to messages (and may append a toolResult
closing a dangling toolUse) before ``BeforeInvocationEvent``, too late for a hook; and a ``finally``
around the stream releases the lock however the invocation ends, even if the caller drops the stream.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from strands.types.exceptions import SessionException

from .options import MAX_TTL, number

logger = logging.getLogger(__name__)

#: The first sleep between two attempts to take a busy lock, and the ceiling it doubles up to (s).
FIRST_DELAY = 0.05
MAX_DELAY = 0.5

#: A member's fingerprint: the SHA1 of its record ('' = none) and its newest message id ('' = none).
Fingerprint = tuple[str, str]

#: Runs lua/lock.lua: (operation for error messages, KEYS, ARGV after the ttl) -> its reply.
Runner = Callable[[str, list[str], list[Any]], Any]


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
    return hashlib.sha1(raw.encode("utf-8") if isinstance(raw, str) else raw).hexdigest()


@dataclass
class Member:
    """A member of the session that invocations lock: an agent, or a Swarm/Graph."""

    id: str
    keys: list[str]  # lua/lock.lua's KEYS: session, index, lock key, record key[, message-id ZSET]
    reload: Callable[[], None]  # read it again from the session: state, messages
    newest: Callable[[], str] = lambda: ""  # the newest message id this process knows of it ('' = none)
    seen: Fingerprint | None = None  # its fingerprint when this process last read or released it

    @property
    def lock_key(self) -> str:
        """The key of its lock."""
        return self.keys[2]

    @property
    def record_key(self) -> str:
        """The key of its record; its other keys (messages) start with this and ``:``."""
        return self.keys[3]


class Lease:
    """A held lock: its token, and a thread renewing it every ``interval`` s until ``stop_renewing``."""

    def __init__(self, member: Member, token: str, renew: Callable[[Lease], bool], interval: float) -> None:
        """Start renewing at once (``interval``: a third of the lease)."""
        self.member = member
        self.token = token
        self.depth = 1  # invocations of the same object sharing it (the SDK decides if they may run)
        self._stopped = threading.Event()
        thread = threading.Thread(target=self._renew, args=(renew, interval), name="session-lock-renewal")
        thread.daemon = True
        thread.start()

    def _renew(self, renew: Callable[[Lease], bool], interval: float) -> None:
        expires = time.monotonic() + 3 * interval
        while not self._stopped.wait(interval):
            try:
                if renew(self):
                    expires = time.monotonic() + 3 * interval
                    continue
            except SessionException as error:  # the lease may outlive a blip: the next renewal may work
                if time.monotonic() < expires:
                    logger.warning("%s | could not renew the session lock, will retry", error)
                    continue
            if not self._stopped.is_set():
                logger.warning(
                    "key=<%s> | lost the session lock: its lease ran out before it was renewed; this "
                    "invocation's writes are refused from now on",
                    self.member.lock_key,
                )
            return

    def stop_renewing(self) -> None:
        """Stop the renewals; the lease then runs out by itself unless released."""
        self._stopped.set()


class SessionLock:
    """The locks one session manager takes: waiting, renewing, fencing, releasing, handing over."""

    def __init__(self, run: Runner, session_id: str, timeout: float, lease: float, ttl_ms: int) -> None:
        """Check the settings; nothing is sent to Valkey until an invocation starts.

        A lease never ends after its session (ttl_ms: the session's ttl, 0 = none), so with a ttl shorter
        than the lease it is renewed every ttl / 3 instead of every lease / 3.
        """
        number("lock_timeout", timeout, least=0.0, most=MAX_TTL.total_seconds())
        number("lock_lease", lease, least=0.001, most=MAX_TTL.total_seconds())
        self._run = run
        self.session_id = session_id
        self.timeout = float(timeout)
        self._lease_ms = max(1, round(lease * 1000))
        self._renew_every = min(self._lease_ms, ttl_ms or self._lease_ms) / 3000
        self._held: dict[str, Lease] = {}  # by lock key
        self._mutex = threading.Lock()
        self._read: dict[str, str] = {}  # record key -> SHA1 of the value this process last read
        self._rng = random.Random()

    # -- what the manager tells it -----------------------------------------------------------

    def saw(self, record_key: str, raw: bytes | str | None) -> None:
        """Note a record's value as just read from Valkey."""
        self._read[record_key] = sha1(raw)

    def guard(self, target: Any, member: Member) -> None:
        """Make every invocation of ``target`` (an Agent, a Swarm, a Graph) hold ``member``'s lock."""
        self._remember(member)
        invoke = target.stream_async

        @functools.wraps(invoke)
        async def stream_async(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            lease = await self._enter(member)
            events = invoke(*args, **kwargs)
            try:
                async for event in events:
                    yield event
            finally:
                try:
                    await events.aclose()  # the SDK's own cleanup (its last sync) still under the lock
                finally:
                    self._exit(lease)

        target.stream_async = stream_async

    def fence(self, key: str) -> tuple[str, str] | None:
        """Return the lock key and token that fence a write to ``key`` while its member's lock is held."""
        for lease in list(self._held.values()):
            record = lease.member.record_key
            if key == record or key.startswith(record + ":"):
                return lease.member.lock_key, lease.token
        return None

    # -- one invocation ----------------------------------------------------------------------

    async def _enter(self, member: Member) -> Lease:
        with self._mutex:
            lease = self._held.get(member.lock_key)
            if lease is not None:  # the same object is being invoked already: the SDK decides
                lease.depth += 1
                return lease
        token = uuid.uuid4().hex
        found = await self._acquire(member, token)
        lease = Lease(member, token, self._renew, self._renew_every)
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
                member.reload()
                self._remember(member)
        except BaseException:
            self._exit(lease)
            member.seen = None  # the reload did not finish: read it again next time
            raise
        return lease

    async def _acquire(self, member: Member, token: str) -> Fingerprint:
        started = time.monotonic()
        delays = backoff(self._rng)
        while True:
            reply = self._run("acquire session lock", member.keys, ["acquire", token, self._lease_ms])
            if reply is not None:
                return fingerprint(reply)
            waited = time.monotonic() - started
            if waited >= self.timeout:
                raise SessionBusyError(self.session_id, member.id, waited, self.timeout)
            logger.debug("session_id=<%s>, agent_id=<%s> | session busy, waiting", self.session_id, member.id)
            await asyncio.sleep(min(next(delays), self.timeout - waited))

    def _renew(self, lease: Lease) -> bool:
        return self._run("renew session lock", lease.member.keys, ["renew", lease.token, self._lease_ms]) is not None

    def _exit(self, lease: Lease) -> None:
        member = lease.member
        with self._mutex:
            lease.depth -= 1
            if lease.depth:
                return
            if self._held.get(member.lock_key) is lease:
                del self._held[member.lock_key]
        lease.stop_renewing()
        member.seen = None
        try:
            reply = self._run("release session lock", member.keys, ["release", lease.token])
        except SessionException as error:
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


def fingerprint(reply: list[Any]) -> Fingerprint:
    """Read a fingerprint from lua/lock.lua's reply (strings or bytes, as the client decodes them)."""
    sha, newest = (value.decode() if isinstance(value, bytes) else str(value) for value in reply)
    return sha, newest
