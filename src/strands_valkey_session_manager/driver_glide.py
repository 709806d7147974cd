"""The driver of a Valkey GLIDE client (the ``glide`` extra): ``glide_sync`` and asyncio ``glide``, one class.

A GLIDE client's calls return their results (``glide_sync``) or coroutines (``glide``): each is awaited only
if awaitable, so the same driver serves both, and an operation on a ``glide_sync`` client never suspends
(:func:`driver.drive` runs it). What differs from valkey-py's drivers (driver.py):

- Replies are the server's, as bytes (GLIDE has no reply callbacks); a command's arguments go as bytes or
  strings. Errors are GLIDE's ``RequestError`` with its own wording: :func:`valkey_error` turns them back into
  the valkey-py exceptions the callers test for (``NoScriptError``, ``ResponseError``, ``ConnectionError``...),
  with the server's text, in this one place.
- A :class:`driver.Transaction` is an atomic ``Batch`` (GLIDE sends ``MULTI``/``EXEC`` itself); the other
  commands of a round trip a non-atomic one. GLIDE multiplexes one connection per node, so a connection cannot
  be held for ``WATCH`` (``pins`` is False): the callers take the script path instead.
- On a cluster, a round trip goes to its slot's primary (``SlotIdRoute``); GLIDE follows ``MOVED`` and ``ASK``
  itself and keeps its own slot map (``moved`` and ``refresh`` have nothing to do); what it hands back
  (``TRYAGAIN``, a ``MOVED`` past its own redirections, a dropped connection) replication.py follows as for any
  client, up to ``MIGRATION_WAIT``.
- ``WAIT`` counts the replicas that acknowledged every write sent on its connection: GLIDE's one connection per
  node carries our write and others' (it may wait for theirs too, never miss ours). Standalone, it follows the
  write in the same pipeline. On a cluster, GLIDE may have followed an ``ASK`` to a node the round trip was not
  routed to, and does not say so; in a failover, its map of every primary may not show the one just promoted:
  ``WAIT`` goes to the slot's primary as GLIDE routes it and to every primary after the write (two more round
  trips), and the least count is the answer.
- Fork: GLIDE runs a runtime thread of its own, which a forked child does not inherit; a client made before a
  fork is refused in the child (``SessionException``: make the client after the fork).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from glide_shared.commands.batch import Batch, ClusterBatch
from glide_shared.commands.batch_options import ClusterBatchOptions
from glide_shared.exceptions import ClosingError, GlideError
from glide_shared.exceptions import ConnectionError as GlideConnectionError
from glide_shared.exceptions import TimeoutError as GlideTimeoutError
from glide_shared.routes import AllPrimaries, ByAddressRoute, SlotIdRoute, SlotType
from strands.types.exceptions import SessionException
from valkey.cluster import ClusterParser
from valkey.crc import key_slot
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.exceptions import ValkeyError

from .driver import Item, Send, Transaction, _done, drive, glide_kind

T = TypeVar("T")

#: How many times a round trip on a cluster is sent again after a dropped connection (GLIDE reconnects).
CLUSTER_RETRIES = 3

#: GLIDE's names of the server's error kinds, and the codes the server sent.
_KINDS = {
    "ResponseError": "ERR",
    "ExecAbortError": "EXECABORT",
    "BusyLoadingError": "LOADING",
    "NoScriptError": "NOSCRIPT",
    "Moved": "MOVED",
    "Ask": "ASK",
    "TryAgain": "TRYAGAIN",
    "ClusterDown": "CLUSTERDOWN",
    "CrossSlot": "CROSSSLOT",
    "MasterDown": "MASTERDOWN",
    "ReadOnly": "READONLY",
    "NotBusy": "NOTBUSY",
}
_SIGNALLED = re.compile(r"An error was signalled by the server: - (\w+): (.*)", re.DOTALL)
_EXTENSION = re.compile(r"([A-Z][A-Z_-]*): (.*)", re.DOTALL)  # a code GLIDE has no name for: "CODE: detail"


def valkey_error(error: GlideError) -> ValkeyError:
    """Return the valkey-py exception a valkey-py client raises for what GLIDE reported as ``error``."""
    if isinstance(error, GlideTimeoutError):
        return ValkeyTimeoutError(str(error))
    if isinstance(error, GlideConnectionError | ClosingError):
        return ValkeyConnectionError(str(error))
    text = str(error)
    signalled = _SIGNALLED.fullmatch(text)
    if not signalled and not _EXTENSION.fullmatch(text) and ("IoError" in text or "connect" in text.lower()):
        # Not the server's: a connection that could not be made (refused, or its handshake unanswered: GLIDE
        # retries until its connection timeout, then says "timed out" either way), made lazily or again.
        return ValkeyConnectionError(text)
    if signalled and signalled.group(1) in _KINDS:
        text = f"{_KINDS[signalled.group(1)]} {signalled.group(2)}"
    else:
        extension = _EXTENSION.fullmatch(text)
        if extension:
            text = f"{extension.group(1)} {extension.group(2)}"
    parsed: ValkeyError = ClusterParser.parse_error(text)  # ASK, TRYAGAIN... too
    return parsed


def _arg(value: Any) -> bytes | str:
    """One argument as GLIDE takes it (bytes or str), encoded as valkey-py encodes it."""
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, bool):
        raise TypeError(f"a command argument may not be a bool ({value!r})")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _args(args: tuple[Any, ...]) -> list[Any]:
    """Return a command's arguments (a first one of several words, as valkey-py takes them: split)."""
    first, *rest = args
    return [*str(first).split(), *map(_arg, rest)] if isinstance(first, str) else list(map(_arg, args))


def _reply(value: Any) -> Any:
    """Return a reply (or an error, as a value) as valkey-py's raw one: status as bytes, errors as ValkeyError."""
    if isinstance(value, GlideError):
        return valkey_error(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_reply(item) for item in value]
    return value


def check_process(client: Any) -> None:
    """Raise ``SessionException`` if an asyncio GLIDE ``client`` was made in another process (a forked child's).

    A ``glide_sync`` client makes its connections anew in a forked child (GLIDE registers that at fork); an
    asyncio one cannot (its responses come through a pipe read by the loop it was made on, in the parent).
    """
    born = getattr(client, "_create_pid", 0)  # set by glide's asyncio clients only
    if born and born != os.getpid():
        raise SessionException(
            f"client=<{type(client).__module__}.{type(client).__qualname__}> | this asyncio GLIDE client was made in "
            f"process {born} and this is process {os.getpid()}, a fork of it: it cannot work here. Make the client "
            "(and the managers on it) in the worker, after the fork (gunicorn's post_fork, a worker init hook)."
        )


class GlideDriver:
    """A GLIDE client, synchronous (``glide_sync``) or asyncio (``glide``): see the module docstring."""

    #: GLIDE multiplexes its connections: none can be held for a WATCH.
    pins = False
    #: A batch with no route is split by GLIDE over the nodes of its keys' slots (replies in order).
    routes = True

    def __init__(self, client: Any) -> None:
        """Drive ``client``."""
        check_process(client)
        self.client = client
        self.asyncio, self.cluster = glide_kind(client) or (False, False)
        #: The loop an asyncio client belongs to (GLIDE keeps it as ``_loop``): it is awaited on no other.
        self.loop = getattr(client, "_loop", None) if self.asyncio else None
        self.retries = CLUSTER_RETRIES if self.cluster else 0

    async def command(self, *args: Any, **options: Any) -> Any:
        """Send one command; on a cluster, to ``target_nodes=`` (a route), loads to every primary, the rest by key."""
        check_process(self.client)
        try:
            if self.cluster:
                name = " ".join(map(str, args[:2])).upper()
                route = AllPrimaries() if name.startswith(("SCRIPT LOAD", "FUNCTION LOAD")) else None
                route = options.get("target_nodes", route)
                reply = await _done(self.client.custom_command(_args(args), route))
            else:
                reply = await _done(self.client.custom_command(_args(args)))
        except GlideError as error:
            raise valkey_error(error) from error
        return _reply(reply)

    async def round_trip(self, node: Any, items: list[Item]) -> list[Any]:
        """Send the items to ``node`` (a route; ``None``: the standalone client); return the replies, errors as values.

        Plain commands go as one pipeline (a non-atomic batch), a transaction as an atomic batch.
        """
        check_process(self.client)
        last = items[-1] if items else None
        if self.cluster and isinstance(last, tuple) and last[0][0] == "WAIT":
            # GLIDE may have followed an ASK to another node than the route, or a MOVED to a primary its map of
            # every primary does not show yet (just promoted, in a failover): WAIT on the slot's primary as GLIDE
            # routes it now and on every primary, the least acknowledgements counting (a primary whose connection
            # carried none of our writes answers at once). A WAIT that fails is the write unconfirmed.
            replies = await self.round_trip(node, items[:-1])
            counts: list[Any] = []
            try:
                for route in (node, AllPrimaries()):
                    acknowledged = await _done(self.client.custom_command(_args(last[0]), route))
                    counts += acknowledged.values() if isinstance(acknowledged, dict) else [acknowledged]
            except GlideError as error:
                return [*replies, valkey_error(error)]
            return [*replies, min(int(count) for count in counts)]
        replies = []
        plain: list[tuple[Any, ...]] = []
        for item in [*items, None]:
            if isinstance(item, tuple):
                plain.append(item[0])
                continue
            sent = [command for command in plain if command[0] != "ASKING"]  # GLIDE follows ASK itself
            answers = iter(await self._batch(node, sent, atomic=False) if sent else [])
            replies += [b"OK" if command[0] == "ASKING" else next(answers) for command in plain]
            plain = []
            if isinstance(item, Transaction):
                try:
                    replies.append(await self._batch(node, list(item.commands), atomic=True))
                except (ValkeyConnectionError, ValkeyTimeoutError):
                    raise
                except ValkeyError as refused:  # refused before it ran (EXEC ran none)
                    replies.append(refused)
        return replies

    async def _batch(self, node: Any, commands: list[tuple[Any, ...]], atomic: bool) -> list[Any]:
        """Execute the commands as one batch (``atomic``: a transaction) on ``node``; errors as values."""
        batch = (ClusterBatch if self.cluster else Batch)(is_atomic=atomic)
        for command in commands:
            batch.custom_command(_args(command))
        try:
            if self.cluster:
                options = ClusterBatchOptions(route=node) if node is not None else None
                done = await _done(self.client.exec(batch, False, options))
            else:
                done = await _done(self.client.exec(batch, False))
        except GlideError as error:
            raise valkey_error(error) from error
        return [_reply(reply) for reply in done] if done is not None else [None] * len(commands)

    async def sleep(self, seconds: float) -> None:
        """Yield to the loop (asyncio), or block this thread."""
        if self.asyncio:
            await asyncio.sleep(seconds)
        else:
            time.sleep(seconds)

    def keyslot(self, key: str) -> int:
        """Return the key's cluster slot."""
        return int(key_slot(key.encode()))

    async def node_of(self, slot: int) -> Any:
        """Return the route to the slot's primary (GLIDE's slot map finds it)."""
        return SlotIdRoute(SlotType.PRIMARY, slot)

    def node_at(self, host: str, port: int) -> Any:
        """Return the route to the node at ``host:port``."""
        return ByAddressRoute(host, port)

    def moved(self, error: Exception) -> None:
        """Nothing: GLIDE corrects its slot map after ``MOVED`` itself."""

    async def refresh(self) -> None:
        """Nothing: GLIDE reloads its slot map itself after a failed call."""

    async def primaries(self) -> list[tuple[Any, list[int]]]:
        """Return a route to every primary with the slots it serves, as the cluster says now (``CLUSTER SLOTS``)."""
        ranges = await self.command("CLUSTER", "SLOTS")
        found: dict[tuple[str, int], list[int]] = {}
        for start, end, primary, *_ in ranges:
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            found.setdefault((host, int(primary[1])), []).extend(range(int(start), int(end) + 1))
        return [(ByAddressRoute(host, port), slots) for (host, port), slots in found.items()]

    @asynccontextmanager
    async def pinned(self, key: str) -> AsyncIterator[Send]:
        """GLIDE cannot hold a connection (``pins`` is False): callers check ``pins`` and take the script."""
        raise NotImplementedError("GLIDE multiplexes its connections: check the driver's pins first")
        yield  # pragma: no cover


class SyncTwin:
    """What an asyncio GLIDE client's manager runs on when it is not on the client's loop: a ``glide_sync`` twin.

    The same role as storage/client_loop.py's ``ClientLoop`` for valkey-py (``call``, ``run``, ``client_on``,
    ``close``), without a private loop: every asyncio GLIDE client of a process has its responses read by one
    event loop (the first one that made such a client), so a private loop waiting on it deadlocks whenever that
    loop waits for the private one. A ``glide_sync`` client made from the same configuration waits on no loop:
    synchronous code calls it on its own thread, another loop awaits it in a worker thread. Made on first use
    (and anew in a forked child, where ``glide_sync`` reconnects by itself). ``ValkeyStorage`` runs on one too,
    for either kind of GLIDE client: the SDK awaits it from any loop, and the given client is left alone.
    """

    def __init__(self, client: Any) -> None:
        """Describe the twin of the GLIDE ``client`` (nothing is made yet)."""
        self._config = getattr(client, "config", None) or client._config  # asyncio glide's, glide_sync's
        self._cluster = (glide_kind(client) or (True, False))[1]
        self._lock = threading.Lock()
        self._twin: Any = None

    def _client(self) -> Any:
        with self._lock:
            if self._twin is None:
                try:
                    import glide_sync
                except ImportError as error:  # pragma: no cover - the glide extra installs both
                    raise SessionException(
                        "an asyncio GLIDE client needs valkey-glide-sync too, for calls off its loop: "
                        "pip install 'strands-valkey-session-manager[glide]'"
                    ) from error
                kind = glide_sync.GlideClusterClient if self._cluster else glide_sync.GlideClient
                try:
                    self._twin = kind.create(self._config)
                except GlideError as error:
                    raise valkey_error(error) from error
            return self._twin

    def call(self, operation: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``operation(client)`` on this thread (it never suspends: the twin is synchronous)."""
        return drive(operation(self._client()))

    async def run(self, operation: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Run ``operation(client)`` in a worker thread, awaited: the calling loop is not blocked."""
        return await asyncio.to_thread(self.call, operation)

    def client_on(self, loop: asyncio.AbstractEventLoop) -> Any:
        """Return ``None``: no loop of its own runs operations."""
        return None

    def close(self) -> None:
        """Close the twin, if it was made. Idempotent."""
        with self._lock:
            twin, self._twin = self._twin, None
        if twin is not None:
            twin.close()
