"""Where a store operation runs: on the calling thread, awaited on an event loop, or queued for an async hook.

A store operation (store.py) is a coroutine on a driver (driver.py). The SDK calls a session manager from
synchronous code (its ``SessionRepository`` methods, the restore inside ``Agent(...)``) and from async hooks; a
:class:`Runner` takes each operation where it can run without blocking an event loop:

- a synchronous client: at once, on the calling thread (its coroutine never suspends, ``drive``);
- an asyncio client, a write the SDK's synchronous logic makes inside an async hook: queued, and awaited by
  the hook once that logic returns (:meth:`Runner.deferring`);
- an asyncio client, on the loop ``open()`` ran on (the home loop): awaited on the client itself (``open()`` reads
  the session awaited before the SDK's constructor runs there, so that it has nothing left to send);
- an asyncio client, anywhere else (a synchronous ``agent("hi")`` on a loop of the SDK's, a worker thread): on a
  private loop thread with a client cloned from the given one (storage/client_loop.py), one per client, shared by
  its managers. Only the calling thread waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from strands.hooks import AgentInitializedEvent, HookRegistry, MultiAgentInitializedEvent

from . import connection, scripts
from .connection import driver_for
from .driver import Driver, drive
from .options import Client
from .storage.client_loop import AsyncClient, Private, clone_client, private_for

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A store operation, written once for every kind of client: a coroutine on the driver it is given.
Operation = Callable[[Driver], Coroutine[Any, Any, Any]]
#: Set while the SDK's synchronous logic runs inside an async hook: (runner, its queue). The runner's writes are
#: queued there, then awaited by the hook (``deferring``). A context variable: other threads (the keep-alive)
#: never see it.
_DEFERRED: contextvars.ContextVar[tuple[Any, list[Operation]] | None] = contextvars.ContextVar(
    "valkey_session_deferred", default=None
)


class Runner:
    """Runs a manager's store operations on its client, where they do not block an event loop (module docstring)."""

    def __init__(self, client: Client | AsyncClient) -> None:
        """Run on ``client``; nothing is sent."""
        self.client = client
        # An asyncio client: what is not awaited on the home loop runs on a private loop thread.
        self._private = private_loop(client) if self.driver.asyncio else None
        self.home: asyncio.AbstractEventLoop | None = None  # the loop open() ran on: the client is awaited there
        self._pending: list[Operation] = []  # writes of a restore on the home loop, awaited by the next hook
        self._tasks: set[asyncio.Future[Any]] = set()  # best-effort operations running as tasks (held: not collected)

    @property
    def client(self) -> Client | AsyncClient:
        """The client operations are sent through."""
        return self._client

    @client.setter
    def client(self, client: Client | AsyncClient) -> None:
        self._client = client
        self.driver: Driver = driver_for(client)

    @property
    def blocking(self) -> bool:
        """Whether the client is synchronous: its operations run on the calling thread, hooks stay synchronous."""
        return not self.driver.asyncio

    def now(self, operation: Operation) -> Any:
        """Run ``operation`` from synchronous code and return what it returns (a read, or a write that must be done).

        An asyncio client's runs on the private loop thread, which blocks only this thread.
        """
        if not self.driver.asyncio:
            return drive(operation(self.driver))
        return self._private_loop().call(lambda client: operation(driver_for(client)))

    def later(self, operation: Operation) -> None:
        """Run a write from synchronous code: queued for the async hook running it (``deferring``), else :meth:`now`."""
        deferred = _DEFERRED.get()
        if deferred is not None and deferred[0] is self and self.driver.asyncio:
            deferred[1].append(operation)
        else:
            self.now(operation)

    async def awaited(self, operation: Operation) -> Any:
        """Await ``operation``: on the client itself on the home loop, else on the private loop."""
        if not self.driver.asyncio:
            return drive(operation(self.driver))
        if self.home is asyncio.get_running_loop():
            return await operation(self.driver)
        return await self._private_loop().run(lambda client: operation(driver_for(client)))

    def home_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` (the one ``open()`` runs on) the home loop, if the client may be awaited there.

        An asyncio GLIDE client belongs to the loop it was made on (driver_glide.GlideDriver.loop): on another
        loop, its operations go off the loop as anywhere else.
        """
        if getattr(self.driver, "loop", loop) is loop:
            self.home = loop

    def _private_loop(self) -> Private:
        assert self._private is not None  # an asyncio client's runner has one
        return self._private

    def best_effort(self, operation: Operation) -> None:
        """Run ``operation`` (an owner's listing, directory.Listing) from synchronous code that may be on a loop.

        Inside an operation running on an event loop of the asyncio client (the home loop, or the private one), it
        cannot be waited for there: it is sent as a task of that loop, and a failure is logged (the listing's
        touches are amortised, and the next listing repairs what one missed). Elsewhere, :meth:`now`.
        """
        loop = _running_loop()
        io: Driver | None = None
        if loop is not None and self._private is not None:
            private = self._private.client_on(loop)
            io = self.driver if loop is self.home else driver_for(private) if private is not None else None
        if io is None:
            self.now(operation)
            return
        task = asyncio.ensure_future(operation(io))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_listing_failure)

    async def settled(self) -> None:
        """Wait for the best-effort operations running as tasks on this loop (their failures are logged)."""
        loop = asyncio.get_running_loop()
        mine = [task for task in self._tasks if task.get_loop() is loop]
        if mine:
            await asyncio.wait(mine)

    def script(self, script: scripts.Script, keys: list[str], args: list[Any]) -> None:
        """:meth:`best_effort` a script of no session (the owner's listing)."""
        self.best_effort(lambda io: script.on(io, keys, args))

    def restoring(self, restore: Callable[[], None]) -> None:
        """Run a restore of the SDK's; on the home loop, its writes are sent by the next hook (``flush``)."""
        if self.home is not None and _running_loop() is self.home:
            token = _DEFERRED.set((self, self._pending))
            try:
                restore()
            finally:
                _DEFERRED.reset(token)
        else:
            restore()

    async def flush(self) -> None:
        """Send the writes a restore on the home loop left (a new agent's record), before anything else."""
        while self._pending:
            await self.awaited(self._pending.pop(0))

    def deferring(self, callback: Callable[[Any], Any]) -> Callable[[Any], Awaitable[None]]:
        """Return an async hook that runs the SDK's synchronous ``callback`` with the writes queued, then awaits them.

        Writes a restore on the home loop left go first.
        """

        async def hook(event: Any) -> None:
            await self.flush()
            queue: list[Operation] = []
            token = _DEFERRED.set((self, queue))
            try:
                callback(event)
            finally:
                _DEFERRED.reset(token)
            for operation in queue:
                await self.awaited(operation)

        return hook

    def hooks(self, registry: HookRegistry) -> Any:
        """Return the registry the SDK's hooks go to: as it is for a synchronous client, else one that awaits them."""
        return registry if self.blocking else _AsyncHooks(registry, self)


#: The private loop of each asyncio client given to a manager: shared by its managers (one per request, often), so
#: they share its connections. It goes with the client (closed when the client is garbage collected).
_PRIVATE_LOOPS: weakref.WeakKeyDictionary[Any, Private] = weakref.WeakKeyDictionary()
_PRIVATE_LOCK = threading.Lock()


def private_loop(client: Any) -> Private:
    """Return the private loop of an asyncio client (made on first use); a glide_sync twin for a GLIDE one."""
    with _PRIVATE_LOCK:
        found = _PRIVATE_LOOPS.get(client)
        if found is None:
            clone = functools.partial(_clone, weakref.ref(client))
            found = _PRIVATE_LOOPS[client] = private_for(client, clone, "valkey-session")
            weakref.finalize(client, found.close)
        return found


def _clone(client: weakref.ref[AsyncClient]) -> AsyncClient:
    """Clone the client a private loop serves (held weakly: the loop must not keep it alive; its managers do)."""
    alive = client()
    if alive is None:  # pragma: no cover - a manager holds its client while it may call
        raise RuntimeError("the asyncio client of this private loop is gone")
    return clone_client(alive)


def close_built(client: Any) -> None:
    """Disconnect a client ``from_url`` built: an asyncio one was used only through its private loop, closed here."""
    if connection.is_asyncio(client):
        with _PRIVATE_LOCK:
            private = _PRIVATE_LOOPS.pop(client, None)
        if private is not None:
            private.close()
    else:
        client.close()


def _log_listing_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("owner's listing not updated, the next listing repairs it: %s", task.exception())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _AsyncHooks:
    """The SDK's hook registration, for an asyncio client: each callback becomes an awaited one (``deferring``).

    ``AgentInitializedEvent`` and ``MultiAgentInitializedEvent`` stay synchronous (the SDK forbids async
    callbacks there).
    """

    def __init__(self, registry: HookRegistry, runner: Runner) -> None:
        self.registry, self.runner = registry, runner

    def add_callback(self, event_type: Any, callback: Callable[[Any], Any]) -> None:
        if event_type in (AgentInitializedEvent, MultiAgentInitializedEvent):
            self.registry.add_callback(event_type, callback)
        else:
            self.registry.add_callback(event_type, self.runner.deferring(callback))
