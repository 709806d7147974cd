"""A ``valkey.asyncio`` client of our own, used only on an event loop of our own, reachable from any event loop.

A ``valkey.asyncio`` connection belongs to the event loop it was opened on: used from another loop it fails
(``RuntimeError: Event loop is closed``, or a future attached to a different loop). The Strands SDK calls
storage from many loops: a synchronous ``agent("hi")`` runs each invocation, and each restore, on a fresh loop
in a worker thread (``asyncio.run``), while ``invoke_async``/``stream_async`` run on the caller's loop.

So :class:`ClientLoop` keeps one private loop in a daemon thread, with one client cloned from the settings of
the client it was given (host, port, credentials, TLS, timeouts, retry; replies as bytes). Every operation
runs there; the calling loop awaits it. Connections are reused across agent calls (no reconnect, no cluster
rediscovery per call), and the given client itself is never touched, so its owner may keep using it on their
own loop.

A forked child (gunicorn or celery prefork, multiprocessing with fork) inherits the loop, its client and their
file descriptors, but not the thread: it starts a loop and client of its own on first use. What it inherited
must never act on the parent's connections, even when the child's garbage collector or exit finalises it:
the loop's epoll instance is one kernel object shared by parent and child (a child unregistering a socket
silences it in the parent, whose next call then stalls until its socket timeout), and closing a TLS
connection sends a close_notify on the parent's socket. So right after a fork (``os.register_at_fork``) the
child points every descriptor registered in the inherited loop's selector (its sockets, its wake-up pipe) at
``/dev/null``: whatever the inherited objects do then, they do it to that, never to anything of the parent's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import selectors
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, Union

import valkey.asyncio
from valkey.asyncio.cluster import ClusterNode
from valkey.asyncio.connection import BlockingConnectionPool, SSLConnection

from ..connection import is_glide

if TYPE_CHECKING:
    from ..driver_glide import SyncTwin

logger = logging.getLogger(__name__)

AsyncClient = valkey.asyncio.Valkey | valkey.asyncio.ValkeyCluster
T = TypeVar("T")

#: Where an asyncio client's operations run off its own loop: a private loop and a clone (valkey-py), or a
#: glide_sync twin (GLIDE: driver_glide.SyncTwin says why). Both take ``run``, ``call``, ``client_on``, ``close``.
Private = Union["ClientLoop", "SyncTwin"]

#: Seconds ``close()`` waits for the client to disconnect and the thread to end.
CLOSE_TIMEOUT = 5.0


def clone_client(client: AsyncClient) -> AsyncClient:
    """Return a new client with ``client``'s connection settings and its own connections, replying bytes.

    Raises:
        TypeError: If the client's settings cannot be copied (a pool class that takes more than connection
            settings, such as Sentinel's).
    """
    try:
        if isinstance(client, valkey.asyncio.ValkeyCluster):
            return _clone_cluster(client)
        pool = client.connection_pool
        options: dict[str, Any] = {**pool.connection_kwargs, "decode_responses": False}
        if isinstance(pool, BlockingConnectionPool):
            options["timeout"] = pool.timeout
        clone = type(pool)(connection_class=pool.connection_class, max_connections=pool.max_connections, **options)
    except TypeError as error:
        raise TypeError(
            f"client=<{client!r}> | ValkeyStorage cannot copy this client's connection settings ({error}); "
            "pass a client made with valkey.asyncio.Valkey(...), .from_url(...) or valkey.asyncio.ValkeyCluster(...)"
        ) from error
    return valkey.asyncio.Valkey.from_pool(clone)  # owns the pool: aclose() disconnects it


def _clone_cluster(client: valkey.asyncio.ValkeyCluster) -> valkey.asyncio.ValkeyCluster:
    """Return a new cluster client from the startup nodes and the constructor options ``client`` keeps."""
    accepted = inspect.signature(valkey.asyncio.ValkeyCluster.__init__).parameters
    options = {name: value for name, value in client.connection_kwargs.items() if name in accepted}
    manager = client.nodes_manager
    options.update(
        decode_responses=False,
        ssl=issubclass(client.connection_kwargs.get("connection_class", object), SSLConnection),
        require_full_coverage=manager.require_full_coverage,
        dynamic_startup_nodes=manager._dynamic_startup_nodes,
        address_remap=manager.address_remap,
        read_from_replicas=client.read_from_replicas,
        reinitialize_steps=client.reinitialize_steps,
        cluster_error_retry_attempts=client.cluster_error_retry_attempts,
        connection_error_retry_attempts=client.connection_error_retry_attempts,
    )
    nodes = [ClusterNode(node.host, node.port) for node in manager.startup_nodes.values()]
    return valkey.asyncio.ValkeyCluster(startup_nodes=nodes, **options)


def private_for(client: Any, make_clone: Callable[[], AsyncClient], name: str) -> Private:
    """Return where ``client``'s operations run off its own loop (nothing is started yet).

    A ``SyncTwin`` for a GLIDE client, else a ``ClientLoop`` named ``name`` serving ``make_clone()``.
    """
    if is_glide(client):
        from ..driver_glide import SyncTwin  # the glide extra is there: its client is

        return SyncTwin(client)
    return ClientLoop(make_clone, name)


#: Every ClientLoop of this process, detached from its parent's loop in a forked child.
_LOOPS: weakref.WeakSet[ClientLoop] = weakref.WeakSet()


class ClientLoop:
    """Run operations on a private client, on a private event loop in a daemon thread, from any event loop.

    Starts lazily on first use, and again after :meth:`close` or in a forked child.
    """

    def __init__(self, make_client: Callable[[], AsyncClient], name: str = "valkey-storage") -> None:
        """Describe the loop; ``make_client`` builds the client when the loop starts."""
        self._make_client = make_client
        self._name = name
        self._lock = threading.Lock()
        self._state: tuple[asyncio.AbstractEventLoop, threading.Thread, AsyncClient, selectors.BaseSelector] | None
        self._state = None
        _LOOPS.add(self)

    def _started(self) -> tuple[asyncio.AbstractEventLoop, AsyncClient]:
        """Return the private loop and its client, starting them if need be."""
        with self._lock:
            state = self._state
            if state is None or not state[1].is_alive():
                selector = selectors.DefaultSelector()  # kept: a forked child detaches what it lists
                loop = asyncio.SelectorEventLoop(selector)
                thread = threading.Thread(target=_serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                state = self._state = (loop, thread, self._make_client(), selector)
            return state[0], state[2]

    def _forked(self) -> None:
        """In a forked child: leave the parent's loop and connections alone, and start afresh on first use.

        The inherited descriptors of the loop (its sockets and its wake-up pipe) are pointed at ``/dev/null``,
        so that nothing the inherited objects do (closing, a TLS close_notify, unregistering) reaches the
        parent's connections; the objects themselves are dropped. A lock another thread held at the fork
        would never be released in the child: it gets a new one.
        """
        self._lock = threading.Lock()
        state, self._state = self._state, None
        if state is None:
            return
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for key in list(state[3].get_map().values()):
                os.dup2(null, key.fd)
        finally:
            os.close(null)

    async def run(self, operation: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Await ``operation(client)`` on the private loop, from whatever loop calls this."""
        loop, client = self._started()
        if asyncio.get_running_loop() is loop:
            return await operation(client)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(operation, client), loop))

    def call(self, operation: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run ``operation(client)`` on the private loop and wait for it, blocking only the calling thread."""
        loop, client = self._started()
        return asyncio.run_coroutine_threadsafe(_call(operation, client), loop).result()

    def client_on(self, loop: asyncio.AbstractEventLoop) -> AsyncClient | None:
        """Return the private client if ``loop`` is the private loop (code running there), else ``None``."""
        state = self._state
        return state[2] if state is not None and state[0] is loop else None

    def close(self) -> None:
        """Disconnect the client and stop the thread (waiting up to ``CLOSE_TIMEOUT`` s). Idempotent."""
        with self._lock:
            state, self._state = self._state, None
        if state is None or not state[1].is_alive():
            return
        loop, thread, client, _ = state
        disconnect = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        if threading.current_thread() is not thread:  # never block the loop on itself (a GC-run finalizer)
            try:
                disconnect.result(CLOSE_TIMEOUT)
            except Exception as error:  # closing is best effort: log, never raise
                logger.debug("thread=<%s>, error=<%r> | could not disconnect cleanly", self._name, error)
        loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(CLOSE_TIMEOUT)


async def _call(operation: Callable[[AsyncClient], Awaitable[T]], client: AsyncClient) -> T:
    """``operation(client)`` as a coroutine (``run_coroutine_threadsafe`` takes coroutines only)."""
    return await operation(client)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop until ``close()`` stops it, then close it: the thread's body."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _after_fork_in_child() -> None:
    for client_loop in list(_LOOPS):
        client_loop._forked()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
