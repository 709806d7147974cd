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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import valkey.asyncio
from valkey.asyncio.cluster import ClusterNode
from valkey.asyncio.connection import BlockingConnectionPool, SSLConnection

logger = logging.getLogger(__name__)

AsyncClient = valkey.asyncio.Valkey | valkey.asyncio.ValkeyCluster
T = TypeVar("T")

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


class ClientLoop:
    """Run operations on a private client, on a private event loop in a daemon thread, from any event loop.

    Starts lazily on first use, and again after :meth:`close` or in a forked child.
    """

    def __init__(self, make_client: Callable[[], AsyncClient], name: str = "valkey-storage") -> None:
        """Describe the loop; ``make_client`` builds the client when the loop starts."""
        self._make_client = make_client
        self._name = name
        self._lock = threading.Lock()
        self._state: tuple[asyncio.AbstractEventLoop, threading.Thread, AsyncClient, int] | None = None

    def _started(self) -> tuple[asyncio.AbstractEventLoop, AsyncClient]:
        """Return the private loop and its client, starting them if need be."""
        with self._lock:
            state = self._state
            if state is None or state[3] != os.getpid() or not state[1].is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve, args=(loop,), name=self._name, daemon=True)
                thread.start()
                state = self._state = (loop, thread, self._make_client(), os.getpid())
            return state[0], state[2]

    async def run(self, operation: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Await ``operation(client)`` on the private loop, from whatever loop calls this."""
        loop, client = self._started()
        if asyncio.get_running_loop() is loop:
            return await operation(client)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(operation, client), loop))

    def close(self) -> None:
        """Disconnect the client and stop the thread (waiting up to ``CLOSE_TIMEOUT`` s). Idempotent."""
        with self._lock:
            state, self._state = self._state, None
        if state is None or state[3] != os.getpid() or not state[1].is_alive():
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
