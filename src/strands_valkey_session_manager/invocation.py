"""Around every invocation of an agent or a Swarm/Graph: its session kept alive, and its lock held if asked.

``ttl`` is a session's idle life, and an invocation is not idle, however long its model calls and tools
take. While any invocation of a manager runs, the manager's :class:`Heartbeat` keeps the session's deadline
more than ``ttl`` ahead and renews the leases of the session lock (lock.py):

- It keeps the session alive every ``0.1 * ttl``, the first time ``0.1 * ttl`` after the invocation
  started: a turn shorter than that sends nothing. (At once if this manager last refreshed the session
  more than ``0.8 * ttl`` ago: the session could expire before the first beat otherwise, since a Swarm
  writes nothing until its first node is done.) Each time, every key of the session moves to
  ``now + 1.15 * ttl`` (the server's clock, lua/keep_alive.lua), all together, so that from the first
  beat on the deadline stays at least ``ttl`` ahead; the keys move once per ``0.1 * ttl``.
- With the lock on it also renews the held leases every ``lock_lease / 3``; a renewal is the keep-alive's
  carrier when both fall due (lua/lock.lua's renew moves the session too): one command per beat.
- When the last running invocation ends, however it ends (it returns or raises, is cancelled, or its
  stream is closed or dropped), its beats stop and, if it kept the session alive at all, the session's
  deadline is set back to exactly ``now + ttl``: from there the idle clock runs as after any write.

The beats of every manager of the process run on one thread, started when a beat is first due and ended
after ``LINGER`` idle seconds, so an invocation costs no thread: starting one costs more (about 0.25 ms on
a busy machine) than a whole short turn's bookkeeping. A beat is one command; a slow server delays the
other sessions' beats by its round trip.

The SDK converts the prompt to messages (and may close a dangling toolUse) before ``BeforeInvocationEvent``,
too late for a hook, so this wraps the agent's (or orchestrator's) ``stream_async``, which ``__call__`` and
``invoke_async`` go through; the ``finally`` around its stream ends the invocation however it ends.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from strands.types.exceptions import SessionException

from . import errors, telemetry
from .lock import Member, SessionLock

logger = logging.getLogger(__name__)

#: A running invocation's session is kept alive every ``BEAT * ttl`` seconds.
BEAT = 0.1

#: Seconds the process's keep-alive thread waits with nothing to do before it ends (it starts again on demand).
LINGER = 30.0

#: Sends lua/keep_alive.lua: (move when less than this many ms are left, to this many ms from now).
KeepAlive = Callable[[int, int], None]


@dataclass(eq=False)
class _Run:
    """One busy spell of a manager: from the first of its invocations that starts to the last that ends."""

    heartbeat: Heartbeat
    keep_at: float  # time.monotonic() of the next keep-alive (inf: no ttl)
    renew_at: float  # ... of the next renewal of the held leases (inf: no lock)
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while it beats
    stopped: bool = False  # its invocations ended
    kept_alive: bool = False  # it sent a keep-alive: the session's deadline may be more than ttl ahead
    gone: bool = False  # it found the session gone (deleted, or expired)
    context: otel_context.Context | None = None  # the first invocation's: its beats' spans are its children


class _Beats:
    """The process's keep-alive thread: beats each busy manager when its next beat is due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[_Run, float] = {}  # the runs waiting for their next beat, and when it is
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread looks again by itself

    def schedule(self, run: _Run) -> None:
        """Beat ``run`` when it is due (``min(keep_at, renew_at)``)."""
        due = min(run.keep_at, run.renew_at)
        with self._cond:
            self._due[run] = due
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="session-keep-alive", daemon=True)
                self._thread.start()
            elif due < self._wakes_at:
                self._cond.notify()

    def cancel(self, run: _Run) -> None:
        """Beat ``run`` no more."""
        with self._cond:
            self._due.pop(run, None)

    def scheduled(self) -> int:
        """Return how many busy managers wait for a beat."""
        with self._cond:
            return len(self._due)

    def _serve(self) -> None:
        """Beat whatever is due, until nothing has been for ``LINGER`` seconds: the thread."""
        while (run := self._next()) is not None:
            try:
                run.heartbeat._beat(run)
            except Exception:  # a bug must not end the beats of every other session of the process
                logger.exception(
                    "session_id=<%s> | keep-alive failed: this invocation is kept alive no more",
                    run.heartbeat.session_id,
                )

    def _next(self) -> _Run | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._due:
                    run = min(self._due, key=self._due.__getitem__)
                    if self._due[run] <= now:
                        del self._due[run]
                        self._wakes_at = math.inf
                        return run
                    self._wakes_at = self._due[run]
                    self._cond.wait(self._wakes_at - now)
                else:
                    self._wakes_at = now + LINGER
                    if not self._cond.wait(LINGER) and not self._due:
                        self._thread = None
                        return None

    def _forked(self) -> None:
        """In a forked child: the thread does not run there, and none of the parent's invocations."""
        self._cond = threading.Condition()
        self._due = {}
        self._thread = None
        self._wakes_at = math.inf


_BEATS = _Beats()


def scheduled() -> int:
    """Return how many managers of this process have an invocation running that waits for its next beat."""
    return _BEATS.scheduled()


#: Every Heartbeat of this process, reset in a forked child (its parent's invocations do not run there).
_HEARTBEATS: weakref.WeakSet[Heartbeat] = weakref.WeakSet()


class Heartbeat:
    """Keeps a manager's session alive, and its held leases renewed, while any of its invocations runs."""

    def __init__(
        self,
        session_id: str,
        ttl_ms: int,
        keep_alive: KeepAlive,
        lock: SessionLock | None,
        renewed: Callable[[int], None] = lambda extend_ms: None,
        keep_alive_async: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        """Describe the beats; nothing runs until an invocation starts (``ttl_ms`` 0: the session never expires).

        ``renewed(extend_ms)`` is told when a renewal of the held leases carried the keep-alive (``keep_alive``
        was not called for it): the session's deadline moved to at most now + ``extend_ms``. ``keep_alive_async``
        awaits the same (the last one, as an invocation ends on its loop; by default ``keep_alive``).
        """
        self.session_id = session_id
        self._ttl_ms = ttl_ms
        self._keep_alive = keep_alive
        self._keep_alive_async = keep_alive_async
        self._lock = lock
        self._renewed = renewed
        #: Seconds between two keep-alives, and between two renewals of the held leases (inf: never).
        self.period = ttl_ms * BEAT / 1000 if ttl_ms else math.inf
        self.renew_every = lock.renew_every if lock is not None else math.inf
        # Every period: when less than ttl + period is left (always, on time), move to ttl + 1.5 period from
        # now: between two beats the deadline stays >= ttl ahead, with half a period to spare for a late one.
        period_ms = round(ttl_ms * BEAT)
        self._due_ms, self._extend_ms = ttl_ms + period_ms, ttl_ms + period_ms + period_ms // 2
        #: When (time.monotonic()) this manager last ran a script that refreshes the session if due: the
        #: session then had at least 0.9 ttl left. The manager sets it; the first beat comes sooner if it is old.
        self.refreshed = -math.inf
        self._mutex = threading.Lock()
        self._running = 0
        self._run: _Run | None = None
        _HEARTBEATS.add(self)

    @property
    def needed(self) -> bool:
        """Whether invocations need it at all (a ttl to keep, or leases to renew)."""
        return not (math.isinf(self.period) and math.isinf(self.renew_every))

    def guard(self, target: Any, member: Member | None) -> None:
        """Wrap every invocation of ``target``: kept alive, and locked if ``member``.

        An Agent, a Swarm or a Graph is invoked through its ``stream_async``; a ``BidiAgent`` (a voice session) is
        invoked from its ``start()`` to its ``stop()``.
        """
        if not hasattr(target, "stream_async"):
            self._guard_connection(target, member)
            return
        invoke = target.stream_async

        @functools.wraps(invoke)
        async def stream_async(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async with self._running_invocation(member):
                events = invoke(*args, **kwargs)
                try:
                    async for event in events:
                        yield event
                finally:
                    await events.aclose()  # the SDK's own cleanup (its last sync), still kept alive and locked

        target.stream_async = stream_async

    def _guard_connection(self, target: Any, member: Member | None) -> None:
        """Wrap a ``BidiAgent``'s connection: one invocation from ``start()`` to ``stop()`` (or a failed start)."""
        start, stop = target.start, target.stop
        running: list[contextlib.AsyncExitStack] = []

        @functools.wraps(start)
        async def guarded_start(*args: Any, **kwargs: Any) -> Any:
            invocation = contextlib.AsyncExitStack()
            await invocation.enter_async_context(self._running_invocation(member))
            try:
                started = await start(*args, **kwargs)
            except BaseException:
                await invocation.aclose()
                raise
            running.append(invocation)
            return started

        @functools.wraps(stop)
        async def guarded_stop(*args: Any, **kwargs: Any) -> Any:
            try:
                return await stop(*args, **kwargs)  # the SDK's last writes, still kept alive and locked
            finally:
                while running:
                    await running.pop().aclose()

        target.start, target.stop = guarded_start, guarded_stop

    @contextlib.asynccontextmanager
    async def _running_invocation(self, member: Member | None) -> AsyncIterator[None]:
        lease = None
        if member is not None and self._lock is not None:
            lease = await self._lock.enter(member)
            self.refreshed = max(self.refreshed, lease.renewed)  # acquiring refreshed the session if due
        try:
            self._begin()
            try:
                yield
            finally:
                await self._end()
        finally:
            if lease is not None and self._lock is not None:
                await self._lock.exit(lease)

    def _begin(self) -> None:
        with self._mutex:
            self._running += 1
            if self._running > 1:
                return
            now = time.monotonic()
            keep_at = math.inf
            if self._ttl_ms:  # a period from now, sooner if the session may have less than 0.1 ttl by then
                keep_at = min(now + self.period, self.refreshed + 8 * self.period)
            run = self._run = _Run(self, keep_at, now + self.renew_every, context=otel_context.get_current())
        _BEATS.schedule(run)

    async def _end(self) -> None:
        with self._mutex:
            self._running -= 1
            if self._running or self._run is None:
                return
            run, self._run = self._run, None
        with run.lock:  # a beat in flight lands before the last word below
            run.stopped = True
            _BEATS.cancel(run)
        if run.kept_alive and not run.gone:
            try:  # exactly now + ttl (unless someone set it beyond any keep-alive): the idle clock runs again
                if self._keep_alive_async is not None:
                    await self._keep_alive_async(self._extend_ms + 1, self._ttl_ms)
                else:
                    self._keep_alive(self._extend_ms + 1, self._ttl_ms)
            except SessionException as error:
                logger.warning("%s | could not set the session's idle deadline after the invocation", error)

    def _beat(self, run: _Run) -> None:
        """Renew the held leases, and keep the session alive if that is due; then schedule the next beat."""
        with run.lock:
            if run.stopped:
                return
            now = time.monotonic()
            keep = now >= run.keep_at
            run.kept_alive |= keep
            with telemetry.within(run.context):
                sent = self._send(keep)
            if not sent:
                run.gone = True
                return
            if keep:
                run.keep_at = max(run.keep_at + self.period, now)
            run.renew_at = now + self.renew_every  # every beat renews the held leases
            _BEATS.schedule(run)

    def _send(self, keep: bool) -> bool:
        """Renew the held leases, and keep the session alive if ``keep``; False once the session is gone."""
        sent = time.monotonic()
        session = [self._due_ms, self._extend_ms] if keep else []
        try:
            renewed = self._lock is not None and self._lock.renew_held(session)  # a renewal carries the keep-alive
            if keep and not renewed:
                self._keep_alive(self._due_ms, self._extend_ms)
            elif keep:
                self._renewed(self._extend_ms)
        except SessionException as error:
            if errors.session_gone(error.__cause__):
                logger.warning("%s | stopped keeping it alive: the running invocation's next write fails", error)
                return False
            logger.warning("%s | could not keep the session alive, will retry", error)
            return True
        if keep:
            self.refreshed = sent
        return True

    def _forked(self) -> None:
        """In a forked child: none of its parent's invocations runs there."""
        self._mutex = threading.Lock()
        self._running = 0
        self._run = None


def _after_fork_in_child() -> None:
    _BEATS._forked()
    for heartbeat in list(_HEARTBEATS):
        heartbeat._forked()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
