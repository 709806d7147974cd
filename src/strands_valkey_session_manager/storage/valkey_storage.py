"""``ValkeyStorage``: the Strands SDK's unified ``Storage`` (bytes under '/'-separated keys) in Valkey.

It backs ``SnapshotSessionManager`` (one snapshot blob per agent, immutable checkpoints), the context
offloader, the context manager's stash, memory stores, and anything else given ``Agent(storage=...)``.
Key layout, grouping and expiry: see ``keys.py`` and ``docs/storage.md``.
"""

from __future__ import annotations

import builtins
import copy
import functools
import logging
import weakref
from datetime import timedelta
from typing import Any, TypeVar, cast

from strands.storage.search.keyword import STOP_WORDS, KeywordSearchStrategy, tokenize
from strands.storage.storage import Storage, StorageSearchResult
from strands.types.exceptions import StorageError
from valkey.exceptions import ResponseError

from .. import connection, errors, replication, scripts, sdk, telemetry
from ..connection import driver_for
from ..driver import Driver, together
from ..options import ttl_ms
from ..scripts import BASE, Script
from ..values import DEFAULT_MAX_VALUE_BYTES, Keyring, Values
from .client_loop import AsyncClient, clone_client, private_for
from .keys import StorageKeySchema, escape_storage_key, storage_group, unescape_storage_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``with _errors(operation, key):`` turns what Valkey raises into a ``StorageError``.
_errors = functools.partial(errors.translated, StorageError)

STORAGE = Script("storage", __package__, BASE)
STORAGE_LIST = Script("storage_list", __package__, BASE)

#: Values fetched per round trip by ``search`` (the SDK's keyword search reads 8 at a time, one request each).
SEARCH_BATCH = 256


class ValkeyStorage:
    """Stores bytes under '/'-separated keys in Valkey, behaving like the SDK's ``InMemoryStorage``.

    Each write, read and delete is one Lua script: the value, its group's index and the group's registry
    entry change together. ``list(prefix)`` reads the indexes (``ZRANGE ... BYLEX``), never SCAN or KEYS.
    A group (a key's first two path segments, e.g. ``session/<session_id>``) shares one deadline when
    ``ttl`` is set, and one slot on a cluster. Every operation is written once on the driver seam (driver.py),
    for valkey-py's asyncio clients and Valkey GLIDE's alike.

    Example:
        ```python
        import valkey.asyncio
        from strands import Agent
        from strands.session import SnapshotSessionManager
        from strands_valkey_session_manager import ValkeyStorage

        storage = ValkeyStorage(valkey.asyncio.Valkey.from_url("valkey://localhost:6379"), ttl=3600)
        agent = Agent(session_manager=SnapshotSessionManager("user-42", storage=storage))
        ```
    """

    def __init__(
        self,
        client: AsyncClient | Any,
        *,
        ttl: int | timedelta | None = None,
        key_prefix: str = "strands",
        encryption: Keyring | None = None,
        compression: str | None = None,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        """Store in the Valkey that ``client`` points at.

        Args:
            client: A ``valkey.asyncio.Valkey`` or ``valkey.asyncio.ValkeyCluster``. Its settings are copied into
                a client of this storage's own, which runs on a private event loop thread, so the SDK may call
                from any event loop; ``client`` itself is left alone. Its timeouts bound every call. Or a Valkey
                GLIDE client, asyncio (``glide``) or ``glide_sync``, standalone or cluster: a ``glide_sync``
                client made from its configuration runs every call, in a worker thread of the calling loop
                (driver_glide.SyncTwin says why).
            ttl: Seconds (or a ``timedelta``) a group of keys lives after its last write or read; ``None``
                (the default) sets no expiry.
            key_prefix: First part of every Valkey key (``strands`` gives ``strands:<key>``).
            encryption: A ``Keyring``: values are encrypted (AES-256-GCM), bound to their Valkey key name; as for
                ``ValkeySessionManager`` (docs/security.md).
            compression: ``None``, ``"gzip"`` or ``"zstd"``: values above 1 KiB compressed when that makes them smaller.
            max_value_bytes: A larger value is refused (``StorageError``), nothing written; ``None``: no bound.

        Raises:
            TypeError: If ``client`` is not an asyncio Valkey client or a GLIDE client (a URL, a pool, a
                synchronous valkey-py client), or its settings cannot be copied.
            ValueError: If ``ttl``, ``key_prefix`` or a value setting is not usable.
        """
        self.values = Values(encryption, compression, max_value_bytes, StorageError)
        glide_sync = connection.is_glide(client) and not connection.is_asyncio(client)
        cluster = connection.check_client(client, "ValkeyStorage", asyncio=not glide_sync, glide=True)
        self.keys = StorageKeySchema(key_prefix, cluster=cluster)
        if not connection.is_glide(client):
            clone_client(client)  # refuse now, not on first use, a client whose settings cannot be copied
        self._telemetry_target = telemetry.Target(client)
        self.ttl_ms = ttl_ms(ttl)
        self._io = private_for(client, lambda: clone_client(client), "valkey-storage")
        self._prefix = ""
        self._root: ValkeyStorage | None = None  # a namespace keeps its root (whose finalizer closes _io) alive
        weakref.finalize(self, self._io.close)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, client: str = "valkey", **options: Any) -> ValkeyStorage:
        """Store in the Valkey at ``url``, through a client built from it (``close()`` disconnects it).

        Args:
            url: ``valkey://[user:password@]host:port[/db]``, ``valkeys://`` for TLS (``?ssl_ca_certs=...``
                in the query, or as an option), ``redis://``, ``rediss://``, ``unix://``.
            cluster: Use a ``valkey.asyncio.ValkeyCluster`` (it finds the other nodes from the URL's one).
            client: ``"valkey"`` (valkey-py, the default) or ``"glide"``: a Valkey GLIDE client (the ``glide``
                extra; docs/glide.md), whose settings are ``request_timeout``, ``connection_timeout`` (ms),
                ``ssl_ca_certs`` and ``client_name``.
            **options: The constructor's options (``ttl``, ``key_prefix``) and the client's settings by name
                (``socket_timeout``, ``ssl_ca_certs``, ``max_connections``, ...), which replace the defaults:
                ``socket_timeout=5``, ``socket_connect_timeout=2`` and (standalone) 3 retries with exponential
                backoff on ``ConnectionError`` and ``TimeoutError``.

        Raises:
            TypeError: If an option is neither the storage's nor the client's (the closest name is suggested),
                or ``url`` is not a string.
            ValueError: If ``url`` is not a Valkey URL, or as for the constructor. Nothing connects before the
                first call.
        """
        glide = client == "glide"
        mine, built = connection.open_url(cls, url, not glide, cluster, options, StorageError, client)
        storage = cls(built, **mine)
        if glide:
            built.close()  # its configuration made the storage's own client (driver_glide.SyncTwin)
        return storage

    def __repr__(self) -> str:
        """Where this storage keeps its keys."""
        scope = f", namespace={self._prefix!r}" if self._prefix else ""
        return f"ValkeyStorage(key_prefix={self.keys.prefix!r}, cluster={self.keys.cluster}{scope})"

    # -- the Storage protocol ---------------------------------------------------------------------------------

    async def _script(self, operation: str, key: str, value: bytes = b"") -> Any:
        """Run the storage script on one key (relative to this namespace, unnormalised).

        A value is sealed before a write and opened after a read (values.py), bound to its Valkey key name.
        """
        full = f"{self._prefix}{sdk.normalize_key(key)}"
        member = escape_storage_key(full)
        group = storage_group(member)
        head, cut = self.keys.head(group)
        keys = [self.keys.index(group), self.keys.value(member), *self.keys.registry(group)]
        args: list[Any] = [self.ttl_ms, operation, member, group, head, cut]
        if operation == "write":
            sealed = self.values.seal(keys[1], value)
            args.append(sealed)
            telemetry.wrote(telemetry.SCRIPT, 0, len(sealed))
        with _errors(operation, full):
            reply = await self._io.run(
                lambda client: scripts.run_on(STORAGE, driver_for(client), keys, args, session=False)
            )
        return self.values.open(keys[1], reply) if operation == "read" and reply is not None else reply

    @telemetry.traced(telemetry.STORAGE_WRITE)
    async def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any value; atomic with the key's index entry.

        Raises:
            StorageError: If the key is invalid (empty, a backslash, a ``..`` segment) or Valkey fails.
        """
        await self._script("write", key, bytes(data))
        logger.debug("key=<%s>, bytes=<%d> | wrote", key, len(data))

    @telemetry.traced(telemetry.STORAGE_READ)
    async def read(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``; slides the key's group's expiry when due.

        Raises:
            StorageError: If the key is invalid or Valkey fails.
        """
        value: bytes | None = await self._script("read", key)
        return value

    @telemetry.traced(telemetry.STORAGE_DELETE)
    async def delete(self, key: str) -> None:
        """Delete ``key``; a no-op if it does not exist.

        Raises:
            StorageError: If the key is invalid or Valkey fails.
        """
        await self._script("delete", key)

    @telemetry.traced(telemetry.STORAGE_LIST)
    async def list(self, query: str = "") -> builtins.list[str]:
        """Keys starting with ``query``, sorted ascending ('' lists all), from the indexes: no SCAN, no KEYS.

        A prefix with two '/' (``session/<id>/...``) lies in one group: one command. A shorter one runs a script
        that asks the registry which groups start with it, then their indexes: one round trip (one per primary,
        in parallel, on a cluster, where each slot has its registry).

        Raises:
            StorageError: If the prefix is invalid or Valkey fails.
        """
        prefix = escape_storage_key(f"{self._prefix}{sdk.normalize_prefix(query)}")
        low, high = ("-", "+") if not prefix else (b"[" + prefix.encode(), b"(" + prefix.encode() + b"\xff")
        if prefix.count("/") >= 2:
            index = self.keys.index(storage_group(prefix))
            command = ("ZRANGEBYLEX", index, low, high)
            with _errors("list", prefix):
                members = await self._io.run(
                    lambda client: replication.execute_on(driver_for(client), index, command, None)
                )
        else:
            with _errors("list", prefix):
                members = await self._io.run(lambda client: self._list_groups(driver_for(client), low, high))
        keys = sorted(unescape_storage_key(member.decode()) for member in members)
        return [key[len(self._prefix) :] for key in keys]

    async def _list_groups(self, driver: Driver, low: bytes | str, high: bytes | str) -> builtins.list[bytes]:
        """Keys in range from every group found through the registries: one script call per node."""
        before, after = self.keys.index_around()
        args = [0, low, high, before, after]
        if not driver.cluster:
            registries = self.keys.registries()
            found: builtins.list[bytes] = await STORAGE_LIST.on(driver, [], [*args, *registries])
            return found
        try:
            return await self._list_on_primaries(driver, args)
        except ResponseError as error:  # a slot moved between the slot map and the call: refresh, ask again
            if "non local key" not in str(error):
                raise
            logger.debug("error=<%s> | slot map changed while listing, refreshing it", error)
            await driver.refresh()
            return await self._list_on_primaries(driver, args)

    async def _list_on_primaries(self, driver: Driver, args: builtins.list[Any]) -> builtins.list[bytes]:
        """Run the list script on every primary (in parallel on an asyncio driver), with the registries of its slots."""
        registries = self.keys.registries()
        calls = [
            STORAGE_LIST.on(driver, [], [*args, *(registries[slot] for slot in slots)], target_nodes=node)
            for node, slots in await driver.primaries()
        ]
        return [key for keys in await together(driver, calls) for key in keys]

    @telemetry.traced(telemetry.STORAGE_SEARCH)
    async def search(self, query: str) -> builtins.list[StorageSearchResult]:
        """Search with the SDK's keyword search (``KeywordSearchStrategy``: query words in key and content).

        Same results and scores as on ``InMemoryStorage``, but values are fetched ``SEARCH_BATCH`` per round
        trip, and searching does not slide any expiry.
        """
        if not tokenize(query) - STOP_WORDS:
            return []
        keys = await self.list("")
        results: builtins.list[StorageSearchResult] = []
        for start in range(0, len(keys), SEARCH_BATCH):
            batch = keys[start : start + SEARCH_BATCH]
            values = await self._fetch(batch)
            fetched = cast(Storage, _Fetched(dict(zip(batch, values, strict=True))))
            results += await KeywordSearchStrategy().search(fetched, query)
        results.sort(key=lambda result: result.score, reverse=True)  # stable: ties stay in key order
        return results

    async def _fetch(self, keys: builtins.list[str]) -> builtins.list[bytes | None]:
        """Values of ``keys`` (relative) in one round trip, without sliding expiry; unreadable ones are None."""
        names = [self.keys.value(escape_storage_key(f"{self._prefix}{key}")) for key in keys]

        with _errors("search", self._prefix):
            reads = [(name, [("GET", name)]) for name in names]
            got = await self._io.run(lambda client: replication.read_each_on(driver_for(client), reads))
        values = [value for (value,) in got]
        return [
            self.values.open(name, value) if isinstance(value, bytes) else None
            for name, value in zip(names, values, strict=True)
        ]

    def namespace(self, prefix: str) -> ValkeyStorage:
        """Return a view of this storage under ``prefix`` (nests); it shares this storage's client and settings.

        Groups are computed on full keys, so a namespace does not change which keys expire together;
        separate tenants with ``key_prefix`` instead.
        """
        normalized = sdk.normalize_prefix(prefix).rstrip("/")
        scoped = copy.copy(self)
        scoped._prefix = f"{self._prefix}{normalized}/" if normalized else self._prefix
        scoped._root = self._root or self
        scoped._namespaced = sdk.NAMESPACED  # type: ignore[attr-defined]
        return scoped

    # -- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect and stop the I/O thread (also done when the storage is garbage collected, and at exit).

        The storage stays usable: the next call reconnects. Closes every namespace of this storage.
        """
        self._io.close()


class _Fetched:
    """Keys and values already read, in the shape ``KeywordSearchStrategy`` searches (``list`` and ``read``)."""

    def __init__(self, values: dict[str, bytes | None]) -> None:
        self._values = values

    async def list(self, query: str = "") -> builtins.list[str]:
        return [key for key in self._values if key.startswith(query)]

    async def read(self, key: str) -> bytes | None:
        return self._values.get(key)
