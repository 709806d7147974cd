"""Drivers: the few I/O primitives every session operation is written on, once, as ``async def``.

Each operation (replication.py's writes and reads that follow a moving slot, scripts.py's script calls
with their reload and their walks) is a coroutine that awaits only a :class:`Driver`'s primitives. A
driver for a synchronous client (:class:`SyncDriver`) does its I/O inside those awaits and never
suspends: :func:`drive` runs the coroutine to its end with one ``send(None)``, on the calling thread, with
no event loop and no thread hop (about a microsecond). A driver for an asyncio client
(:class:`AsyncioDriver`) awaits the client: the same coroutine is awaited on the client's loop.

What a driver provides (and all a new one, such as GLIDE's, must):

- ``client``, ``cluster`` (whether it is a cluster client) and ``asyncio`` (whether its awaits suspend: an
  asyncio client, awaited on the loop it belongs to; else :func:`drive` runs its operations);
- ``await command(*args, **options)``: one command on the client (on a cluster, only loads of scripts and
  libraries, which go to every primary, and calls with ``target_nodes=``);
- ``await round_trip(node, commands)``: the commands in one pipeline to ``node`` (``None``: the standalone
  client; else a node of :meth:`node_of`/:meth:`node_at`), the replies in order, errors as values; each
  command is ``(args, options)``, or a :class:`Transaction` (its reply: ``EXEC``'s, or the refusal that made
  ``EXEC`` run none), which a driver sends as its client does transactions (valkey-py: ``MULTI``/``EXEC``
  in the pipeline, :func:`flattened`; GLIDE: an atomic ``Batch``);
- ``await sleep(seconds)``;
- on a cluster: ``keyslot(key)``, ``await node_of(slot)`` (its primary, from the slot map), ``node_at(host,
  port)`` (added to the map's nodes if new), ``moved(error)`` (correct the slot map after ``MOVED``), ``await
  refresh()`` (reload the slot map), ``retries`` (attempts after a dropped connection), ``await primaries()``
  (every primary, as a node for ``round_trip`` and ``target_nodes=``, with the slots it serves), ``routes``
  (whether ``round_trip(None, ...)`` on a cluster sends each command to its key's node itself: GLIDE's);
- ``pinned(key)``: an async context manager holding one connection to ``key``'s node, yielding ``await
  send(commands)`` (one round trip, replies as bytes, errors as values) and closing a connection left
  watching keys rather than pooling it; only where ``pins`` (GLIDE multiplexes one connection per node and
  cannot hold one: its callers take the script path instead).

The GLIDE drivers are in driver_glide.py.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import valkey.asyncio
from valkey.asyncio.cluster import ClusterNode as AsyncClusterNode
from valkey.client import NEVER_DECODE
from valkey.cluster import PRIMARY, ClusterNode, ValkeyCluster
from valkey.connection import LibvalkeyRespSerializer
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.utils import LIBVALKEY_AVAILABLE

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - valkey-py depends on async-timeout there
    from async_timeout import timeout as _timeout  # type: ignore[import-not-found, no-redef, unused-ignore]

T = TypeVar("T")

#: One command of a round trip: its arguments and the options it goes with (``NEVER_DECODE``).
Sent = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Transaction:
    """Commands about one slot run as one ``MULTI``/``EXEC`` block: :func:`execute` returns ``EXEC``'s replies.

    Their replies come as the server sends them (no client-side parsing): an error one of them met when it
    ran (``WRONGTYPE``) is a value in the list, as ``EXEC`` reports it, and the others ran. A command refused
    before it was queued (a redirection, an unknown command) makes ``EXEC`` run none: that refusal is raised.
    """

    commands: tuple[tuple[Any, ...], ...]
    options: dict[str, Any] = field(default_factory=dict)  # what goes with each command (NEVER_DECODE)


#: One item of a round trip.
Item = Sent | Transaction


def flattened(items: list[Item]) -> tuple[list[Sent], bool, Callable[[list[Any]], list[Any]]]:
    """Return a round trip's items as plain commands (a transaction: ``MULTI``, its commands, ``EXEC``) for valkey-py.

    Returns the commands, whether their replies must be left raw (a transaction's: ``QUEUED`` is no command's
    reply), and what turns the commands' replies into the items' (a transaction's: ``EXEC``'s, unless a command
    was refused before it ran, which made ``EXEC`` run none).
    """
    sent: list[Sent] = []
    sizes = []
    for item in items:
        if isinstance(item, Transaction):
            sent += [(part, item.options) for part in (("MULTI",), *item.commands, ("EXEC",))]
            sizes.append(len(item.commands) + 2)
        else:
            sent.append(item)
            sizes.append(0)

    def regroup(replies: list[Any]) -> list[Any]:
        answers, first = [], 0
        for size in sizes:
            if not size:
                answers.append(replies[first])
                first += 1
                continue
            own = replies[first : first + size]
            answers.append(next((reply for reply in own[1:-1] if isinstance(reply, Exception)), own[-1]))
            first += size
        return answers

    return sent, any(sizes), regroup


#: ``await send(commands)`` on a pinned connection.
Send = Callable[[list[tuple[Any, ...]]], Coroutine[Any, Any, list[Any]]]


def drive(steps: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its driver is synchronous) to its end, on this thread."""
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    steps.close()
    raise RuntimeError("a synchronous driver's operation suspended")  # pragma: no cover


class Driver(Protocol):
    """What every driver provides: the operations are written on these, and nothing else (the module docstring)."""

    client: Any
    #: Whether the client is an asyncio one (its operations are awaited on its loop), and a cluster one.
    asyncio: bool
    cluster: bool
    #: Whether a connection can be held for ``WATCH`` (``pinned``); whether a batch with no route goes by its keys.
    pins: bool
    routes: bool
    #: Attempts after a dropped connection, on a cluster.
    retries: int

    async def command(self, *args: Any, **options: Any) -> Any:
        """Send one command."""

    async def round_trip(self, node: Any, items: list[Item]) -> list[Any]:
        """Send the items in one round trip to ``node``; return the replies, errors as values."""

    async def sleep(self, seconds: float) -> None:
        """Pause."""

    def keyslot(self, key: str) -> int:
        """Return the key's cluster slot."""

    async def node_of(self, slot: int) -> Any:
        """Return the slot's primary."""

    def node_at(self, host: str, port: int) -> Any:
        """Return the node at ``host:port``."""

    def moved(self, error: Exception) -> None:
        """Note a ``MOVED``."""

    async def refresh(self) -> None:
        """Reload the slot map."""

    async def primaries(self) -> list[tuple[Any, list[int]]]:
        """Return every primary and the slots it serves."""

    def pinned(self, key: str) -> AbstractAsyncContextManager[Send]:
        """Hold one connection to ``key``'s node for several round trips."""


class SyncDriver:
    """valkey-py's synchronous ``Valkey`` / ``ValkeyCluster``: every await returns without suspending."""

    asyncio = False
    pins = True
    routes = False

    def __init__(self, client: Any) -> None:
        """Drive ``client``."""
        self.client = client
        self.cluster = isinstance(client, ValkeyCluster)
        self.retries = int(client.cluster_error_retry_attempts) if self.cluster else 0

    async def command(self, *args: Any, **options: Any) -> Any:
        """One command, as the client sends it."""
        return self.client.execute_command(*args, **options)

    async def round_trip(self, node: Any, items: list[Item]) -> list[Any]:
        """Send the commands in one write to ``node`` (or the client); return the replies, errors as values.

        On one of the client's connections, packed and read here (not by a ``Pipeline``, whose per-call objects
        and bookkeeping cost more than the exchange itself); a failure on the wire is retried as the client's
        own commands are (its ``retry``, on its ``retry_on_error``), after closing the connection.
        """
        commands, raw, regroup = flattened(items)
        client = self.client if node is None else self.client.get_valkey_connection(node)
        pool = client.connection_pool
        connection = pool.get_connection("PIPELINE")
        try:
            replies = connection.retry.call_with_retry(
                lambda: drive(_exchange(connection, commands, raw, client.response_callbacks, False)),
                lambda error: _disconnect_raise(connection, error),
            )
            return regroup(replies)
        except BaseException:
            connection.disconnect()  # replies may be left unread: never reuse it as it is
            raise
        finally:
            pool.release(connection)

    async def sleep(self, seconds: float) -> None:
        """Block this thread (there is no loop to yield to)."""
        time.sleep(seconds)

    def keyslot(self, key: str) -> int:
        """Return the key's cluster slot."""
        return int(self.client.keyslot(key))

    async def node_of(self, slot: int) -> Any:
        """Return the slot's primary, from the slot map."""
        return self.client.nodes_manager.get_node_from_slot(slot)

    def node_at(self, host: str, port: int) -> Any:
        """Return the node at ``host:port``, added to the client's nodes if it has not seen it (a shard just added)."""
        node = self.client.get_node(host=host, port=port)
        if node is None:
            node = ClusterNode(host, port, PRIMARY)  # type: ignore[no-untyped-call]
            self.client.nodes_manager.nodes_cache[node.name] = node
        return node

    def moved(self, error: Exception) -> None:
        """Correct the slot's owner after ``MOVED``, as ``ValkeyCluster`` does."""
        self.client.nodes_manager.update_moved_exception(error)

    async def refresh(self) -> None:
        """Reload the slot map."""
        self.client.nodes_manager.initialize()

    async def primaries(self) -> list[tuple[Any, list[int]]]:
        """Return every primary with the slots it serves, from the slot map."""
        return by_primary(self.client.nodes_manager.slots_cache)

    @asynccontextmanager
    async def pinned(self, key: str) -> AsyncIterator[Send]:
        """One connection to ``key``'s node for several round trips (see the module docstring)."""
        client = self.client
        if self.cluster:
            client = client.get_valkey_connection(await self.node_of(self.keyslot(key)))
        pool = client.connection_pool
        async with _holding(pool.get_connection("WATCH"), pool.release, False) as send:
            yield send


class AsyncioDriver:
    """valkey-py's ``valkey.asyncio.Valkey`` / ``ValkeyCluster``, awaited on the loop its connections belong to.

    On a cluster, commands go to a node's own connections (``ClusterNode``): the client's own redirection
    handling is not used (replication.py's module docstring says why; the asyncio client's has the same
    limits as the synchronous one's).
    """

    asyncio = True
    pins = True
    routes = False

    def __init__(self, client: Any) -> None:
        """Drive ``client``."""
        self.client = client
        self.cluster = isinstance(client, valkey.asyncio.ValkeyCluster)
        self.retries = int(client.cluster_error_retry_attempts) if self.cluster else 0

    async def command(self, *args: Any, **options: Any) -> Any:
        """Send one command: standalone, a round trip of one; on a cluster, to all primaries (loads) or target_nodes."""
        if self.cluster:
            options = {"target_nodes": self.client.PRIMARIES, **options}  # its client cannot route FUNCTION LOAD
            return await self.client.execute_command(*args, **options)
        (reply,) = await self.round_trip(None, [(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def round_trip(self, node: Any, items: list[Item]) -> list[Any]:
        """Send the commands in one pipeline to ``node`` (or the client); return the replies, errors as values.

        On one of the client's connections, read here rather than by the client's pipeline: a reply line may
        be longer than asyncio's 64 KiB line limit (an ``UNDECLARED`` naming thousands of keys). A standalone
        client retries as it is set to (its ``retry``); on a cluster, replication.py does.
        """
        commands, raw, regroup = flattened(items)
        return regroup(await self._round_trip(node, commands, raw))

    async def _round_trip(self, node: Any, commands: list[Sent], raw: bool) -> list[Any]:
        if node is not None:
            connection = node.acquire_connection()
            try:
                return await _exchange(connection, commands, raw, node.response_callbacks, True)
            except BaseException:
                await connection.disconnect()  # replies may be left unread: never reuse it as it is
                raise
            finally:
                node._free.append(connection)  # what ClusterNode.execute_pipeline does with it
        pool = self.client.connection_pool
        connection = await pool.get_connection("PIPELINE")
        try:
            return await connection.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: _exchange(connection, commands, raw, self.client.response_callbacks, True),
                lambda error: connection.disconnect(),
            )
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def sleep(self, seconds: float) -> None:
        """Yield to the loop."""
        await asyncio.sleep(seconds)

    def keyslot(self, key: str) -> int:
        """Return the key's cluster slot."""
        return int(self.client.keyslot(key))

    async def node_of(self, slot: int) -> Any:
        """Return the slot's primary, from the slot map (read first, if the client has not yet)."""
        await self.client.initialize()  # at once, once it is done
        return self.client.nodes_manager.get_node_from_slot(slot)

    def node_at(self, host: str, port: int) -> Any:
        """Return the node at ``host:port``, added to the client's nodes if it has not seen it (a shard just added)."""
        manager = self.client.nodes_manager
        node = manager.get_node(host=host, port=port)
        if node is None:
            node = AsyncClusterNode(host, port, PRIMARY, **manager.connection_kwargs)
            manager.set_nodes(manager.nodes_cache, {node.name: node})
        return node

    def moved(self, error: Exception) -> None:
        """Correct the slot's owner after ``MOVED``, as ``ValkeyCluster`` does (on its next lookup)."""
        self.client.nodes_manager._moved_exception = error

    async def refresh(self) -> None:
        """Reload the slot map."""
        await self.client.nodes_manager.initialize()

    async def primaries(self) -> list[tuple[Any, list[int]]]:
        """Return every primary with the slots it serves, from the slot map (read first, if the client has not yet)."""
        await self.client.initialize()
        return by_primary(self.client.nodes_manager.slots_cache)

    @asynccontextmanager
    async def pinned(self, key: str) -> AsyncIterator[Send]:
        """One connection to ``key``'s node for several round trips (see the module docstring)."""
        if self.cluster:
            node = await self.node_of(self.keyslot(key))
            connection, release = node.acquire_connection(), node._free.append
        else:
            pool = self.client.connection_pool
            connection, release = await pool.get_connection("WATCH"), pool.release
        async with _holding(connection, release, True) as send:
            yield send


def by_primary(slots: dict[int, list[Any]]) -> list[tuple[Any, list[int]]]:
    """Return each primary of a valkey-py slot map (slot: its nodes, the primary first) with its slots."""
    found: dict[str, tuple[Any, list[int]]] = {}
    for slot, nodes in sorted(slots.items()):
        found.setdefault(nodes[0].name, (nodes[0], []))[1].append(slot)
    return list(found.values())


#: The options of a command whose reply is read as the server sent it (bytes, whatever the client decodes).
_AS_BYTES = {NEVER_DECODE: True}

#: valkey-py's native command packer (the 'libvalkey' extra), which its synchronous connections use; its asyncio ones
#: pack in Python whatever is installed (~25 µs for an append's block, ~4 µs natively). None without libvalkey.
_NATIVE = LibvalkeyRespSerializer() if LIBVALKEY_AVAILABLE else None

#: The longest reply line (an error, a status) an asyncio connection of ours reads: asyncio's default is 64 KiB.
REPLY_LINE_LIMIT = 2**30


async def _exchange(connection: Any, commands: list[Sent], raw: bool, callbacks: Any, awaits: bool) -> list[Any]:
    """Send ``commands`` on a connection in one write and read their replies, errors as values.

    ``awaits``: an asyncio connection, whose calls are awaited (a synchronous one's are done when they return).
    """
    if awaits:
        await connection.connect()
        reader = getattr(connection, "_reader", None)
        if reader is not None and reader._limit < REPLY_LINE_LIMIT:
            reader._limit = REPLY_LINE_LIMIT
    if awaits and _NATIVE is not None and connection.encoder.encoding == "utf-8":  # what libvalkey encodes with
        packed = [chunk for args, _ in commands for chunk in _NATIVE.pack(*args)]
    else:
        packed = connection.pack_commands([args for args, _ in commands])
    # a synchronous connection checks its health first, as valkey-py's own pipelines do
    sent = connection.send_packed_command(packed, not awaits)
    if awaits:
        await sent
        replies = await _read_all(connection, commands)
    else:
        replies = [_read_one(connection, NEVER_DECODE in options) for _, options in commands]
    return _processed(commands, replies, raw, callbacks)


def _read_one(connection: Any, as_bytes: bool) -> Any:
    """Read a synchronous connection's next reply, an error reply as a value."""
    try:
        return connection.read_response(disable_decoding=as_bytes)
    except ResponseError as error:
        return error


async def _read_all(connection: Any, commands: list[Sent]) -> list[Any]:
    """Read an asyncio connection's replies to ``commands``, errors as values, within one ``socket_timeout``.

    What ``read_response`` does for each reply, once for them all: valkey-py's asyncio connection starts a timeout
    per reply (a timer handle scheduled and cancelled each time: a third of its cost per reply here), where the
    replies of one write arrive together. Its parser (``_parser``, valkey-py 6.x) returns an error reply as a
    value; a timeout or a broken connection disconnects and raises as ``read_response`` does.
    """
    parser = connection._parser
    try:
        async with _timeout(connection.socket_timeout):
            return [await parser.read_response(disable_decoding=NEVER_DECODE in options) for _, options in commands]
    except asyncio.TimeoutError:
        await connection.disconnect(nowait=True)
        raise ValkeyTimeoutError(f"Timeout reading from {connection._host_error()}") from None
    except OSError as error:
        await connection.disconnect(nowait=True)
        raise ValkeyConnectionError(f"Error while reading from {connection._host_error()} : {error.args}") from error
    except BaseException:
        await connection.disconnect(nowait=True)
        raise


def _processed(commands: list[Sent], replies: list[Any], raw: bool, callbacks: Any) -> list[Any]:
    """Apply the client's reply callbacks (unless ``raw``) to the replies that are not errors."""
    if raw:
        return replies
    for i, ((args, options), reply) in enumerate(zip(commands, replies, strict=True)):
        name = str(args[0]).upper()
        if name in callbacks and not isinstance(reply, ResponseError):
            replies[i] = callbacks[name](reply, **{k: v for k, v in options.items() if k != NEVER_DECODE})
    return replies


def _disconnect_raise(connection: Any, error: Exception) -> None:
    """Close a synchronous connection that failed; raise ``error`` unless the client retries it (valkey-py's rule)."""
    connection.disconnect()
    if not isinstance(error, tuple(connection.retry_on_error or ())):
        raise error


@asynccontextmanager
async def _holding(connection: Any, release: Callable[[Any], Any], awaits: bool) -> AsyncIterator[Send]:
    """Hold ``connection`` (``awaits``: an asyncio one) until ``release`` (awaited if it returns an awaitable).

    Yields ``send(commands)`` (see the module docstring); a connection left watching keys, or that failed, is
    closed before it is released.
    """
    watching = False

    async def send(commands: list[tuple[Any, ...]]) -> list[Any]:
        nonlocal watching
        replies = await _exchange(connection, [(command, _AS_BYTES) for command in commands], True, {}, awaits)
        for command in commands:
            name = str(command[0]).upper()
            watching = name == "WATCH" or (watching and name not in ("EXEC", "DISCARD", "UNWATCH"))
        return replies

    try:
        yield send
    except BaseException:
        watching = True
        raise
    finally:
        if watching:
            await _done(connection.disconnect())
        await _done(release(connection))


async def _done(result: Any) -> Any:
    """Return ``result``, awaited if it is awaitable (an asyncio connection's call; a synchronous one's is done)."""
    return await result if inspect.isawaitable(result) else result


async def together(driver: Driver, calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Await ``calls``: together on an asyncio driver, in turn on a synchronous one (whose awaits never suspend)."""
    if driver.asyncio:
        return list(await asyncio.gather(*calls))
    return [await call for call in calls]


def glide_kind(client: object) -> tuple[bool, bool] | None:
    """Return (asyncio, cluster) for a Valkey GLIDE client (or a subclass of one); ``None`` for anything else.

    By its classes' modules and names: GLIDE (the ``glide`` extra) is not imported to tell.
    """
    for kind in type(client).__mro__:
        module = kind.__module__.partition(".")[0]
        if kind.__name__ in ("GlideClient", "GlideClusterClient") and module in ("glide", "glide_sync"):
            return module == "glide", kind.__name__ == "GlideClusterClient"
    return None
