"""Valkey session manager: Strands Agents sessions kept in Valkey (or Redis OSS 7)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from strands.hooks import AgentInitializedEvent, HookRegistry, MessageUpdatedEvent, MultiAgentInitializedEvent
from strands.session.repository_session_manager import RepositorySessionManager
from strands.session.session_repository import SessionRepository
from strands.types.content import Message
from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage
from valkey.client import NEVER_DECODE
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from . import codec, connection, directory, errors, replication, scripts, sdk, telemetry
from .driver import AsyncioDriver, Driver, SyncDriver, drive, driver_for
from .held_records import HeldRecords
from .invocation import Heartbeat
from .keys import AGENT, MESSAGE, MESSAGES, MULTI_AGENT, KeySchema, parse_suffix, validate_id, validate_message_id
from .lock import Member, SessionLock
from .options import Client, ttl_ms
from .storage.client_loop import AsyncClient, ClientLoop, clone_client
from .values import DEFAULT_MAX_VALUE_BYTES, Keyring, Values

if TYPE_CHECKING:
    from strands.multiagent.base import MultiAgentBase
    from strands.types.agent import LocalAgent

logger = logging.getLogger(__name__)

#: ``with _errors(operation, key[, not_found]):`` turns what Valkey raises into a ``SessionException``.
_errors = functools.partial(errors.translated, SessionException)

DEFAULT_TTL = 3600

#: An operation on the store, written once for every kind of client: a coroutine on the driver it is given.
Operation = Callable[[Driver], Coroutine[Any, Any, Any]]

#: Set while the SDK's synchronous logic runs inside an async hook: (manager, its queue). The manager's writes
#: are queued there, then awaited by the hook (``_deferring``). A context variable: other threads (the keep-alive)
#: never see it.
_DEFERRED: contextvars.ContextVar[tuple[Any, list[Operation]] | None] = contextvars.ContextVar(
    "valkey_session_deferred", default=None
)
#: Set by ``open()`` around the construction it runs in a thread of its own: the loop that awaits its I/O.
_OPENING_ON: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "valkey_session_opening_on", default=None
)

#: Clients whose server refused ``SET ... IFEQ`` (before Valkey 8.1; Redis OSS): their agent updates are scripts.
_NO_IFEQ: weakref.WeakSet[Any] = weakref.WeakSet()

#: The options ``RepositorySessionManager.__init__`` takes by name, passed on to it (none in strands-agents 1.62,
#: which drops any other keyword argument without a word: the constructor refuses those instead).
_REPOSITORY_OPTIONS = frozenset(inspect.signature(RepositorySessionManager.__init__).parameters) - {
    "self",
    "session_id",
    "session_repository",
    "kwargs",
}


class ValkeySessionManager(RepositorySessionManager, SessionRepository):
    """Session manager that keeps sessions in Valkey, one JSON string per record.

    Creates the following keys (``{}`` around the session id when ``client`` is a cluster)::

        session:<session_id>                                        # Session (JSON)
        session:<session_id>:index                                  # SET: agent:<id>, multi_agent:<id>
        session:<session_id>:agent:<agent_id>                       # SessionAgent (JSON)
        session:<session_id>:agent:<agent_id>:messages              # ZSET: message ids
        session:<session_id>:agent:<agent_id>:message:<message_id>  # SessionMessage (JSON)
        session:<session_id>:multi_agent:<multi_agent_id>           # Swarm/Graph state (JSON)
        session:<session_id>:lock:agent:<agent_id>                  # lock lease (with lock_timeout)

    Every write is one round trip and atomic: a Lua script (lua/), or for ``create_session`` one
    ``SET ... NX``. All keys of a session share one deadline, pushed out to now + ttl whenever a write or
    a restore finds it below 90% of ttl. The commonest write, an agent's next message, is plain commands
    while that deadline is known and not due (``_append_plain``).
    With ``lock_timeout`` set, invocations of one agent (or Swarm/Graph) run one at a time (lock.py).
    """

    def __init__(
        self,
        session_id: str,
        client: Client | AsyncClient,
        *,
        ttl: int | timedelta | None = DEFAULT_TTL,
        key_prefix: str = "session",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        lock_timeout: float | None = None,
        lock_lease: float = 30.0,
        encryption: Keyring | None = None,
        compression: str | None = None,
        max_value_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
        owner: str | None = None,
        require_owner: bool = False,
        **kwargs: Any,
    ) -> None:
        """Open the session ``session_id``, creating it if it does not exist yet.

        Args:
            session_id: Id of the session; no ``:``, braces, glob characters, whitespace or
                control characters.
            client: A ``valkey.Valkey`` or ``valkey.cluster.ValkeyCluster``, or their ``valkey.asyncio`` kin (the
                hooks await it; from async code open with ``await ValkeySessionManager.open(...)``), with
                ``decode_responses`` True or False. Its timeouts bound every call made here. It stays
                the caller's: ``close()`` leaves it open. (``from_url`` builds one for you.)
            ttl: Seconds (or a ``timedelta``) a session lives after its last write or restore;
                ``None`` sets no expiry.
            key_prefix: First part of every key (``session`` gives ``session:<session_id>``).
            wait_replicas: If > 0, every write waits (``WAIT``, same round trip) until this many replicas
                have it, and raises ``SessionException`` if fewer did within ``wait_timeout_ms``. Opt-in
                protection against losing acknowledged writes when a primary fails; costs one more
                command per write and a replica round trip of latency.
            wait_timeout_ms: How long each write waits for its replicas; keep it below the client's
                ``socket_timeout``.
            lock_timeout: ``None`` (default): no lock. Seconds: every invocation of an agent (or of a
                Swarm/Graph using this manager) first takes a lock on it in this session, waiting up to
                this long (``0``: try once), else raises ``SessionBusyError``. See docs/locking.md.
            lock_lease: Seconds a lock outlives a holder that died; renewed while the invocation runs.
            encryption: A ``Keyring``: every value written is encrypted (AES-256-GCM) with its current key, bound
                to its key name; values under any key of the ring are read. ``None``: values are plain JSON.
                See docs/security.md.
            compression: ``None``, ``"gzip"`` or ``"zstd"`` (the ``zstd`` extra): values above 1 KiB are compressed
                when that makes them smaller.
            max_value_bytes: A record whose JSON is larger is refused (``SessionException``) before anything is
                written; ``None``: no bound. Default 32 MiB.
            owner: Who the session belongs to (an id: the same characters as a session id). A new session is
                bound to it; an existing one opens only with the owner it was created with (else
                ``SessionAccessError``, nothing written). The session is listed in its owner's
                ``SessionDirectory``. ``None``: a session of no owner, or (unless ``require_owner``) any.
            require_owner: Refuse to open any session without ``owner`` (``ValueError``, nothing sent).
            **kwargs: Options of ``RepositorySessionManager`` by name, passed on to it (it takes none in
                strands-agents 1.62).

        Raises:
            TypeError: If ``client`` is not a Valkey client (a URL, a pool, another library's client), or an
                option is unknown (``ttl_seconds=``: the closest known one is named); nothing is sent.
            ValueError: If ``session_id``, ``ttl``, ``key_prefix`` or a lock setting is not usable; nothing
                is written.
            SessionException: If Valkey cannot be reached or holds a foreign value for the session.
            SessionAccessError: If the session exists and ``owner`` is not the one it was created with.
        """
        unknown = [name for name in kwargs if name not in _REPOSITORY_OPTIONS]
        if unknown:  # a typo (ttl_seconds=) must not leave the default in force unnoticed
            options = [*connection.keyword_options(ValkeySessionManager.__init__), *_REPOSITORY_OPTIONS]
            takes = f"the options {', '.join(options)}"
            raise connection.unknown_option("ValkeySessionManager()", unknown[0], options, takes)
        validate_id(session_id, "session_id")
        if owner is not None or require_owner:
            validate_id(owner, "owner (required: require_owner=True)" if require_owner and owner is None else "owner")
        asyncio_client = isinstance(client, AsyncClient)
        cluster = connection.check_client(client, "ValkeySessionManager", asyncio=asyncio_client)  # nothing sent yet
        self.client = client  # and its driver (driver.py)
        # An asyncio client: what is not awaited on the loop that opened the session (open()) runs on a private
        # loop thread, with a client cloned from it (storage/client_loop.py), as ValkeyStorage does.
        self._private = _private_loop(client) if isinstance(client, AsyncClient) else None
        self._home: asyncio.AbstractEventLoop | None = None  # the loop open() ran on: the client is awaited there
        self._pending: list[Operation] = []  # writes of a restore on the home loop, awaited by the next hook
        self._prefetched: dict[tuple[str, str], Any] = {}  # what open() read for the agents' restores
        self.keys = KeySchema(key_prefix, cluster=cluster)
        self.ttl_ms = ttl_ms(ttl)
        self.values = Values(encryption, compression, max_value_bytes)
        self.replica_wait = replication.WaitForReplicas(wait_replicas, wait_timeout_ms) if wait_replicas else None
        self._lock = None
        if lock_timeout is not None:
            self._lock = SessionLock(
                self._run_lock, self.keys, session_id, lock_timeout, lock_lease, self.ttl_ms, self._await_lock
            )
        self.owner = owner
        self._listing = directory.Listing(self._run_script, self.keys, session_id, self.ttl_ms, self._server_ms)
        self._heartbeat = Heartbeat(
            session_id, self.ttl_ms, self._keep_alive, self._lock, self._listing.kept_alive, self._keep_alive_async
        )
        self._listing.titles = encryption is None  # the first message's text is never kept in clear
        self._held = HeldRecords(self)
        # Messages whose append failed on the wire, by (session, agent): re-sent, byte for byte, before the next one.
        self._unconfirmed: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        # What this manager last stored or read at each agent record of its session (by key): an update writes over
        # exactly that, or goes by the script (_update_plain).
        self._stored: dict[str, bytes] = {}
        # Keys of this manager's session it knows exist (records, message-id ZSETs, messages it wrote or read,
        # and those a walk asked for): declared up front when a script must reach every key (scripts.run).
        self._known: dict[str, None] = {}
        # The session's deadline (ms on the server's clock, -1: none) as last seen, and the server's clock minus
        # this host's (ms, plus the error of that estimate): the plain-command writes need both (_fresh_deadline).
        self._deadline: int | None = None
        self._clock_ms: float | None = None
        self._opening = True
        self._joined_existing = False
        super().__init__(session_id=session_id, session_repository=self, **kwargs)
        self._opening = False
        if self._joined_existing:
            key = self.keys.session(session_id)
            with _errors("read session", key):
                (raw,) = self._io(lambda io: replication.read_on(io, key, ("GET", key)), now=True)
            if raw is not None:
                codec.load_record(Session, raw, key, self.values)  # a foreign value: said so first
            self._check_owner(key, raw)  # the concurrent creator's owner, before anything is written
            # Another process created the session between our read and our create: use theirs,
            # and restore agents from it rather than treating it as empty.
            sdk.restore_from_session(self)
            self.session = self.read_session(session_id) or self.session
        self._listing.opened()

    def _check_owner(self, key: str, raw: bytes | str | None) -> None:
        """Refuse to open a session of another owner (``SessionAccessError``: it says nothing of the session).

        ``raw``: the session record as just read (``None``: no session yet, it is created with ``owner``). An
        existing session opens with the owner it was created with, or with none given (not ``require_owner``).
        """
        stored = None if raw is None else directory.owner_of(raw, key, self.values)
        if raw is not None and self.owner not in (None, stored):
            logger.debug("session_id=<%s> | refused: not opened with its owner", self.session_id)
            raise directory.SessionAccessError(self.session_id)
        self.owner = self._listing.owner = stored if raw is not None else self.owner

    @property
    def client(self) -> Client | AsyncClient:
        """The client this manager sends through (the caller's: ``close()`` leaves it open, unless built here)."""
        return self._client

    @client.setter
    def client(self, client: Client | AsyncClient) -> None:
        self._client = client
        self._driver: Driver = driver_for(client)

    @classmethod
    async def open(
        cls, session_id: str, client: AsyncClient, *, agent_ids: Sequence[str] | None = None, **options: Any
    ) -> ValkeySessionManager:
        """Open ``session_id`` from async code: every read awaited on this loop, then ``Agent(...)`` sends nothing.

        The constructor runs in a worker thread while its reads and writes are awaited on this loop (which does
        not block); then the records and messages of the agents ``agent_ids`` names (default: every agent of the
        session) are read, so that an agent built afterwards is restored from them. A new agent's record, written
        at construction, is sent by its first hook. ``client`` is then awaited directly on this loop (and on a
        private loop from any other one).

        Args:
            session_id: As for the constructor.
            client: A ``valkey.asyncio.Valkey`` or ``valkey.asyncio.ValkeyCluster``, used on this loop.
            agent_ids: The agents about to be restored (``None``: every agent of the session).
            **options: The constructor's options.

        Raises:
            As the constructor.
        """
        loop = asyncio.get_running_loop()
        # Not the loop's default executor: the loop itself may need it meanwhile (getaddrinfo, to connect).
        manager = await loop.run_in_executor(
            _OPENERS, functools.partial(_construct, loop, cls, session_id, client, options)
        )
        manager._home = loop
        for agent_id in manager._agent_ids() if agent_ids is None else list(agent_ids):
            await manager._prefetch(agent_id)
        return manager

    async def _prefetch(self, agent_id: str) -> None:
        """Read (awaited) what restoring the agent reads: its record and, if it exists, its messages.

        The messages from the offset its conversation manager will ask for (the messages it removed, as stored).
        """
        key = self.keys.agent(self.session_id, agent_id)
        walk = [self.keys.messages(self.session_id, agent_id)]
        raw = await self._await(
            functools.partial(self._read_record, operation="read agent", session_id=self.session_id, key=key, walk=walk)
        )
        self._prefetched[AGENT, agent_id] = raw
        if raw is not None:
            state = codec.load_record(SessionAgent, raw, key, self.values).conversation_manager_state
            offset = state.get("removed_message_count", 0) if isinstance(state, dict) else 0
            offset = offset if isinstance(offset, int) and offset >= 0 else 0
            listing = functools.partial(
                self._list_messages, session_id=self.session_id, agent_id=agent_id, limit=None, offset=offset
            )
            self._prefetched[MESSAGES, agent_id] = (offset, await self._await(listing))

    def _restoring(self, restore: Callable[[], None]) -> None:
        """Run a restore of the SDK's; on the loop ``open()`` ran on, its writes are sent by the next hook."""
        if self._home is not None and _running_loop() is self._home:
            token = _DEFERRED.set((self, self._pending))
            try:
                restore()
            finally:
                _DEFERRED.reset(token)
        else:
            restore()

    async def _flush_pending(self) -> None:
        """Send the writes a restore on the home loop left (a new agent's record), before anything else."""
        while self._pending:
            await self._await(self._pending.pop(0))

    def _agent_ids(self) -> list[str]:
        """Return the agents of this session that opening it found in its index."""
        parsed = [self.keys.parse(key) for key in list(self._known)]
        return [found.member_id for found in parsed if found is not None and found.kind == AGENT]

    def _io(self, operation: Operation, now: bool = False) -> Any:
        """Run ``operation`` from synchronous code; return what it returns.

        A synchronous client: at once, on this thread (its coroutine never suspends, driver.drive). An asyncio
        client: a write (not ``now``) inside an async hook is queued for the hook to await (``_deferring``);
        during ``open()`` it is awaited on the opening loop; else it runs on the private loop thread, which
        blocks only the calling thread.
        """
        if isinstance(self._driver, SyncDriver):
            return drive(operation(self._driver))
        deferred = _DEFERRED.get()
        if not now and deferred is not None and deferred[0] is self:
            deferred[1].append(operation)
            return None
        loop = _OPENING_ON.get()
        if loop is not None:
            return asyncio.run_coroutine_threadsafe(operation(self._driver), loop).result()
        return self._private_loop().call(lambda client: operation(AsyncioDriver(client)))

    async def _await(self, operation: Operation) -> Any:
        """Await ``operation``: on the client itself on the loop ``open()`` ran on, else on the private loop."""
        if isinstance(self._driver, SyncDriver):
            return drive(operation(self._driver))
        if self._home is asyncio.get_running_loop():
            return await operation(self._driver)
        return await self._private_loop().run(lambda client: operation(AsyncioDriver(client)))

    def _private_loop(self) -> ClientLoop:
        assert self._private is not None  # an asyncio client's manager has one
        return self._private

    def _run_script(self, script: scripts.Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script (not a session script): the owner's listing (directory.Listing), best effort.

        Inside an operation running on an event loop of this manager's asyncio client (the loop ``open()`` ran
        on, or the private one), it cannot be waited for there: it is sent as a task of that loop, and a
        failure is logged (the listing's touches are amortised, and the next listing repairs what one missed).
        """
        loop = _running_loop()
        io: Driver | None = None
        if loop is not None and self._private is not None:
            private = self._private.client_on(loop)
            io = self._driver if loop is self._home else AsyncioDriver(private) if private is not None else None
        if io is None:
            return self._io(lambda io: script.on(io, keys, args), now=True)
        task = asyncio.ensure_future(script.on(io, keys, args))
        task.add_done_callback(_log_listing_failure)
        return None

    def _deferring(self, callback: Callable[[Any], Any]) -> Callable[[Any], Awaitable[None]]:
        """Return an async hook that runs the SDK's synchronous ``callback`` with the writes queued, then awaits them.

        Writes a restore on the home loop left (``_pending``) go first. (An agent update that fails makes the SDK
        forget what it noted as synced: see ``update_agent``.)
        """

        async def hook(event: Any) -> None:
            await self._flush_pending()
            queue: list[Operation] = []
            token = _DEFERRED.set((self, queue))
            try:
                callback(event)
            finally:
                _DEFERRED.reset(token)
            for operation in queue:
                await self._await(operation)

        return hook

    def set_title(self, title: str) -> None:
        """Give the session the title its owner's listing shows (replacing the first message's); needs an owner.

        Raises:
            ValueError: If the session has no owner, or ``title`` is not a non-empty string.
            SessionException: If Valkey cannot be reached.
        """
        if self.owner is None:
            raise ValueError(f"session_id=<{self.session_id}> | has no owner: titles are kept in an owner's listing")
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"title=<{title!r}> | must be a non-empty string")
        self._listing.titled(title)

    #: Whether ``close()`` closes ``client``: only a client ``from_url`` built.
    _owns_client = False

    @classmethod
    def from_url(
        cls, url: str, session_id: str, *, cluster: bool = False, asyncio: bool = False, **options: Any
    ) -> ValkeySessionManager:
        """Open ``session_id`` on the Valkey at ``url`` through a client built for this manager (``close()`` it).

        Args:
            url: ``valkey://[user:password@]host:port[/db]``, ``valkeys://`` for TLS (``?ssl_ca_certs=...``
                in the query, or as an option), ``redis://``, ``rediss://``, ``unix://``.
            session_id: As for the constructor.
            cluster: Build a ``ValkeyCluster`` (it finds the other nodes from the URL's one).
            asyncio: Build a ``valkey.asyncio`` client (its calls from synchronous code run on a private loop
                thread; from async code, pass a client to ``await ValkeySessionManager.open(...)`` instead).
            **options: The constructor's options (``ttl``, ``key_prefix``, ``wait_replicas``, ``lock_timeout``, ...)
                and the client's settings by name (``socket_timeout``, ``ssl_ca_certs``, ``max_connections``, ...),
                which replace the defaults: ``socket_timeout=5``, ``socket_connect_timeout=2``, replies as bytes,
                and (standalone) 3 retries with exponential backoff on ``ConnectionError`` and ``TimeoutError``.

        Raises:
            TypeError: If an option is neither the manager's nor the client's (the closest name is suggested),
                or ``url`` is not a string.
            ValueError: If ``url`` is not a Valkey URL, or as for the constructor; nothing is sent.
            SessionException: If Valkey cannot be reached, or as for the constructor.
        """
        validate_id(session_id, "session_id")
        mine, client = connection.open_url(cls, url, asyncio, cluster, options, SessionException)
        try:
            manager = cls(session_id, client, **mine)
        except BaseException:
            _close_built(client)
            raise
        manager._owns_client = True
        return manager

    def close(self) -> None:
        """Disconnect the client if ``from_url`` built it; a client you passed in is yours and stays open.

        Without ``close()``, the connections of a built client go when the manager is garbage collected.
        """
        if self._owns_client:
            _close_built(self.client)

    async def _script(
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
        fence = self._lock.fence(own[0]) if self._lock is not None and write and own else None
        wait = self.replica_wait if write else None
        known = self._known if session_id == self.session_id else None
        sent = time.monotonic()
        reply = await scripts.run_on(
            script, io, keys, args, ttl_ms=self.ttl_ms, fence=fence, known=known, wait=wait, **walk
        )
        self._heartbeat.refreshed = sent  # every session script refreshes the session when due
        return reply

    def _exist(self, session_id: str, *keys: str) -> None:
        """Note keys of this manager's session that exist: a walk of the session declares them at once."""
        if session_id == self.session_id:
            self._known.update(dict.fromkeys(keys))

    def _exist_agent(self, session_id: str, agent_id: str) -> None:
        """Note an agent of this manager's session: its record, message-id ZSET and lock keys."""
        suffix = self.keys.agent_suffix(agent_id)
        keys = (self.keys.messages(session_id, agent_id), self.keys.lock(session_id, suffix))
        self._exist(session_id, self.keys.agent(session_id, agent_id), *keys)

    def _run_lock(self, operation: str, member: Member, args: list[Any]) -> Any:
        """Run lua/lock.lua on a member of the session for the session lock (lock.py)."""
        return self._io(functools.partial(self._lock_on, operation=operation, member=member, args=args), now=True)

    async def _await_lock(self, operation: str, member: Member, args: list[Any]) -> Any:
        """:meth:`_run_lock`, awaited: an asyncio client's invocation takes and releases the lock without blocking."""
        await self._flush_pending()  # a new agent's record first, as the lock's fingerprint of it expects
        return await self._await(functools.partial(self._lock_on, operation=operation, member=member, args=args))

    async def _lock_on(self, io: Driver, operation: str, member: Member, args: list[Any]) -> Any:
        with _errors(operation, member.lock_key):
            return await scripts.run_on(scripts.LOCK, io, member.keys, args, ttl_ms=self.ttl_ms, known=self._known)

    @telemetry.traced(telemetry.KEEP_ALIVE)
    def _keep_alive(self, due_ms: int, extend_ms: int) -> None:
        """Run lua/keep_alive.lua: a running invocation's heartbeat (invocation.py), every key it knows declared."""
        self._io(functools.partial(self._keep_alive_on, due_ms=due_ms, extend_ms=extend_ms), now=True)

    @telemetry.traced(telemetry.KEEP_ALIVE)
    async def _keep_alive_async(self, due_ms: int, extend_ms: int) -> None:
        """:meth:`_keep_alive`, awaited (the last one, as an invocation ends on its loop)."""
        await self._await(functools.partial(self._keep_alive_on, due_ms=due_ms, extend_ms=extend_ms))

    async def _keep_alive_on(self, io: Driver, due_ms: int, extend_ms: int) -> None:
        keys = [self.keys.session(self.session_id), self.keys.index(self.session_id)]
        with _errors("keep the session alive", keys[0]):
            known, walk = self._known, list(self._known)  # list(): one step, while the agent's thread adds keys
            self._deadline = None  # it may move: the next append is a script, which says where to
            await scripts.run_on(
                scripts.KEEP_ALIVE, io, keys, [due_ms, extend_ms], ttl_ms=self.ttl_ms, walk=walk, known=known
            )
        telemetry.refreshed()
        self._listing.kept_alive(extend_ms)

    # -- sessions ---------------------------------------------------------------------------

    @telemetry.traced(telemetry.CREATE_SESSION)
    def create_session(self, session: Session, **kwargs: Any) -> Session:
        """Create a new session; ``SessionException`` if it exists (unless a concurrent open)."""
        return self._io(functools.partial(self._create_session, session=session), now=True)  # type: ignore[no-any-return]

    async def _create_session(self, io: Driver, session: Session) -> Session:
        key = self.keys.session(session.session_id)
        expiry = ("PX", self.ttl_ms) if self.ttl_ms else ()
        record = codec.encode(session)
        if self.owner is not None and session.session_id == self.session_id:  # extra field: bound to its owner
            record = codec.dumps({**codec.to_dict(session), "owner": self.owner})
        with _errors("create session", key):
            command = ("SET", key, self.values.seal(key, record), "NX", *expiry)
            created = await replication.execute_on(io, key, command, self.replica_wait)
        if not created:
            if not self._opening:
                raise SessionException(f"Session {session.session_id} already exists")
            logger.debug("session_id=<%s> | session created concurrently, joining it", session.session_id)
            self._joined_existing = True
        return session

    @telemetry.traced(telemetry.READ_SESSION)
    def read_session(self, session_id: str, **kwargs: Any) -> Session | None:
        """Read a session record, or ``None``.

        Opening the manager's own session also reads its index in the same round trip, so that a walk of the
        whole session (a due TTL refresh, a delete on logout) declares its members at once and has only
        their messages left to learn; and its deadline and the server's clock, for the plain-command writes.
        """
        return self._io(functools.partial(self._read_session, session_id=session_id), now=True)  # type: ignore[no-any-return]

    async def _read_session(self, io: Driver, session_id: str) -> Session | None:
        key = self.keys.session(session_id)
        opening = self._opening and session_id == self.session_id
        commands: list[tuple[str, ...]] = [("GET", key)]
        if opening:
            commands += [("SMEMBERS", self.keys.index(session_id)), ("PEXPIRETIME", key), ("TIME",)]
        with _errors("read session", key):
            sent = time.monotonic()
            raw, *opened = await replication.read_on(io, key, *commands, **{NEVER_DECODE: True})  # values are bytes
        if opened:
            index, deadline, (seconds, micros) = opened
            for member in index:
                self._exist_member(session_id, member.decode() if isinstance(member, bytes) else member)
            self._deadline = deadline if deadline != -2 else None
            # The server read its clock after `sent`: taken as read at `sent`, the estimate of its clock is never
            # behind it (a refresh is judged due a round trip early at most, never late). Elapsed time is this
            # host's monotonic clock: a step of its wall clock (NTP, a migrated VM) changes nothing.
            self._clock_ms = seconds * 1000 + micros / 1000 - sent * 1000
        record = (
            None if raw is None else codec.load_record(Session, raw, key, self.values)
        )  # a foreign value: said so first
        if opened:
            self._check_owner(key, raw)  # before anything is written
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
            purged = await self._script(
                io, scripts.DELETE_SESSION, session_id, [], ["remnants"], walk=list(self._known)
            )
        self._known.clear()
        logger.debug("session_id=<%s>, keys=<%d> | deleted the remnants of a session that is gone", session_id, purged)

    def _exist_member(self, session_id: str, suffix: str) -> None:
        """Note a member of the session index (``agent:<id>``, ``multi_agent:<id>``); others are ignored."""
        parsed = parse_suffix(suffix)
        if parsed is not None and parsed[0] == AGENT:
            self._exist_agent(session_id, parsed[1])
        elif parsed is not None and parsed[0] == MULTI_AGENT:
            self._exist(session_id, self.keys.member(session_id, suffix), self.keys.lock(session_id, suffix))

    @telemetry.traced(telemetry.DELETE_SESSION)
    def delete_session(self, session_id: str, **kwargs: Any) -> None:
        """Delete every key of the session in one atomic step; no other session is touched.

        A manager that wrote (or restored) messages of the session knows its keys: it declares them, and
        lua/delete_session.lua checks them by walking the session, in one round trip. Any other (a new one, on
        logout) deletes with plain commands (:meth:`_delete_watched`), in two, which costs the server less
        than the walk; when the session is not as a plain delete expects, by the script, which says why.
        """
        self._deleted(session_id, self._io(functools.partial(self._delete_session, session_id=session_id), now=True))

    async def delete_session_async(self, session_id: str) -> None:
        """:meth:`delete_session`, awaited (an asyncio client: a logout in an async handler waits for nothing).

        An owned session leaves its owner's listing before this returns (awaited too).
        """
        deleted = await self._await(functools.partial(self._delete_session, session_id=session_id))
        forget = self._listing.forgetting() if session_id == self.session_id else None
        if forget is not None:
            with directory.not_forgotten(session_id):
                await self._await(lambda io: scripts.OWNER_FORGET.on(io, *forget))
        self._deleted(session_id, deleted, unlisted=forget is not None)

    def _deleted(self, session_id: str, deleted: int, unlisted: bool = False) -> None:
        """After a delete: out of the owner's listing (outside the operation: not on the client's loop), or raise."""
        if session_id == self.session_id and not unlisted:
            self._listing.deleted()
        if not deleted:
            raise SessionException(f"Session {session_id} does not exist")
        logger.debug("session_id=<%s>, keys=<%d> | deleted session", session_id, deleted)

    async def _delete_session(self, io: Driver, session_id: str) -> int:
        key = self.keys.session(session_id)
        known = list(self._known) if session_id == self.session_id else []
        with _errors("delete session", key):
            deleted = None if self._knows_messages(known) else await self._delete_watched(io, session_id, known)
            if deleted is None:
                deleted = await self._delete_by_script(io, session_id, known)
        if session_id == self.session_id:
            self._known.clear()
        return deleted

    async def _delete_by_script(self, io: Driver, session_id: str, known: list[str]) -> int:
        """Delete the session by lua/delete_session.lua: atomically, or record first while writers outrun it."""

        async def call(args: list[Any], walk: list[str]) -> int:
            deleted: int = await self._script(io, scripts.DELETE_SESSION, session_id, [], args, walk=walk)
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
        if self.replica_wait is not None:
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

    # -- agents -----------------------------------------------------------------------------

    async def _write_record(
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
            stored, deadline = await self._script(io, scripts.WRITE_RECORD, session_id, [key], args, walk=list(walk))
        if session_id == self.session_id:
            self._deadline = deadline
            self._listing.wrote(deadline)
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
        raw = self._stored.get(key)
        if raw is None:
            with _errors(operation, key):
                (raw,) = await replication.read_on(io, key, ("GET", key), **{NEVER_DECODE: True})
            if raw is None:
                raise SessionException(not_found or f"key=<{key}> | {operation} refused: the record does not exist")
        return str(codec.loads(raw, key, self.values).get("created_at", ""))

    async def _read_record(
        self, io: Driver, operation: str, session_id: str, key: str, walk: Sequence[str] = ()
    ) -> bytes | str | None:
        """Read one record, sliding the session's expiry if it is due (``walk`` as for ``_write_record``)."""
        with _errors(operation, key):
            raw: bytes | str | None = await self._script(
                io, scripts.READ_RECORD, session_id, [key], [], write=False, walk=list(walk), raw=True
            )
        if self._lock is not None:
            self._lock.saw(key, raw)
        return raw

    @telemetry.traced(telemetry.CREATE_AGENT)
    def create_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """Create (or overwrite, as FileSessionManager does) an agent in the session."""
        agent_id = session_agent.agent_id
        key = self.keys.agent(session_id, agent_id)
        suffix = self.keys.agent_suffix(agent_id)

        async def create(io: Driver) -> None:
            self._stored[key] = (
                await self._write_record(io, "create agent", session_id, key, session_agent, suffix=suffix)
            )[1]
            self._exist_agent(session_id, agent_id)

        self._io(create)

    @telemetry.traced(telemetry.READ_AGENT)
    def read_agent(self, session_id: str, agent_id: str, **kwargs: Any) -> SessionAgent | None:
        """Read an agent, or ``None``; slides the session's expiry (this is how a restore starts)."""
        key = self.keys.agent(session_id, agent_id)
        if (AGENT, agent_id) in self._prefetched:
            raw = self._prefetched.pop((AGENT, agent_id))
        else:
            walk = [self.keys.messages(session_id, agent_id)]
            raw = self._io(
                functools.partial(self._read_record, operation="read agent", session_id=session_id, key=key, walk=walk),
                now=True,
            )
        if raw is None:
            return None
        self._exist_agent(session_id, agent_id)
        self._stored[key] = codec.as_bytes(raw)
        return codec.load_record(SessionAgent, raw, key, self.values)

    @telemetry.traced(telemetry.UPDATE_AGENT)
    def update_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """Update an existing agent, keeping its stored ``created_at``; one round trip."""
        agent_id = session_agent.agent_id
        key = self.keys.agent(session_id, agent_id)

        async def update(io: Driver) -> None:
            try:
                if await self._update_plain(io, session_id, key, session_agent):
                    return
                not_found = f"Agent {agent_id} in session {session_id} does not exist"
                ids = [self.keys.messages(session_id, agent_id)]
                session_agent.created_at, self._stored[key] = await self._write_record(
                    io, "update agent", session_id, key, session_agent, ids, mode="update", not_found=not_found
                )
            except BaseException:  # queued by an async hook, the SDK noted it synced already: not so, next time
                if session_id == self.session_id:
                    sdk.forget_synced(self, agent_id)
                raise

        self._io(update)

    async def _update_plain(self, io: Driver, session_id: str, key: str, session_agent: SessionAgent) -> bool:
        """Update a known agent of this session with one ``SET ... IFEQ <what we stored> KEEPTTL``, if it can.

        ``IFEQ`` (Valkey 8.1+) writes only over the exact bytes this manager last stored or read there, so only
        into this library's record (never over a value it did not write, not even for a moment), only into a
        live session (a record exists only with its session; a delete takes every key at once), and never over
        another writer's newer update; ``KEEPTTL`` keeps the session's deadline, so only while no refresh is due.
        Anything else (the value changed, a server without ``IFEQ``: Valkey 8.0, Redis OSS 7) goes through the
        script (lua/write_record.lua), which reads before it writes. Returns False then (nothing was changed).
        """
        previous = self._stored.get(key)
        if session_id != self.session_id or previous is None or self.client in _NO_IFEQ:
            return False
        if self._fresh_deadline() is None:
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
                    _NO_IFEQ.add(self.client)
                    return False
                if str(error).startswith("WRONGTYPE"):
                    return False  # nothing written: the script names the key and what it holds
                raise
        if not written:
            return False  # not what this manager last saw there: the script reads it and says what to do
        self._stored[key] = value
        session_agent.created_at = json.loads(created_at)
        self._heartbeat.refreshed = sent  # the session had over 0.9 ttl left, as after a script
        telemetry.wrote(telemetry.PLAIN, 0, len(value))
        return True

    # -- messages ---------------------------------------------------------------------------

    async def _append(self, io: Driver, session_id: str, agent_id: str, batch: list[tuple[int, bytes]]) -> None:
        """Write messages of one agent atomically; a different message under a used id is refused."""
        message_keys = self.keys.message_keys(session_id, agent_id, [message_id for message_id, _ in batch])
        keys = [self.keys.messages(session_id, agent_id), *message_keys]
        pairs = [item for message_id, raw in batch for item in (message_id, raw)]
        with _errors("append message", keys[-1]):
            plain = await self._append_plain(io, session_id, agent_id, batch, keys)
            if not plain:
                previous = str(batch[0][0] - 1) if batch[0][0] > 0 else ""  # how the script knows the agent
                args = [self.keys.agent_suffix(agent_id), previous, *pairs]
                deadline = await self._script(io, scripts.APPEND_MESSAGES, session_id, keys, args)
                if session_id == self.session_id:
                    self._deadline = deadline
        self._exist(session_id, *keys)
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
        deadline = self._fresh_deadline()
        if session_id != self.session_id or len(batch) != 1 or deadline is None:
            return False
        ((message_id, raw),) = batch
        if self.keys.message(session_id, agent_id, message_id - 1) not in self._known:
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
            self._deadline = None  # until the settle says where it is: a write that fails meanwhile is a script
            args = [message_id, raw, suffix, int(added == 1), int(indexed == 1)]
            found = await self._script(io, scripts.SETTLE_APPEND, session_id, keys, args)
        self._deadline = found
        self._heartbeat.refreshed = sent  # the session had over 0.9 ttl left, as after a script
        if shortfall is not None:
            raise shortfall
        return True

    def _server_ms(self) -> float | None:
        """Return the server's clock (ms) as estimated here (read_session), never behind it; ``None``: not known."""
        return None if self._clock_ms is None else time.time() * 1000 + self._clock_ms

    def _fresh_deadline(self) -> int | None:
        """Return the session's deadline if an append may go as plain commands: a deadline, no lock, none due.

        Due as the scripts judge it (lua/session.lua's life(): under 0.9 ttl left), on the server's clock as
        estimated from its ``TIME`` read when the manager opened (read_session) plus the time elapsed since on
        this host's monotonic clock: a step of this host's wall clock changes nothing. Not without a ttl or in a
        session without a deadline (-1): a block that a crash cuts off from its settle must leave keys that
        expire (architecture.md).
        """
        deadline, clock = self._deadline, self._clock_ms
        if deadline is None or deadline < 0 or clock is None or self._lock is not None or not self.ttl_ms:
            return None
        if deadline - (time.monotonic() * 1000 + clock) >= 0.9 * self.ttl_ms:
            return deadline
        return None

    @telemetry.traced(telemetry.CREATE_MESSAGE)
    def create_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """Create a message in one round trip; identical content under its id is a retry and succeeds.

        Every message write comes through here. If an earlier one of the agent failed (timeout, dropped
        connection, failover, out of memory: anything but a refusal by the script), that message is
        re-sent first, byte for byte, in the same atomic write: message ids stay gap-free, nothing the
        agent holds goes missing from the store, and a write that did land after all is recognised as
        done, not as a conflict.

        A message is sealed (values.py) once: re-sent, it is the same bytes. Encrypted twice, the same content
        gives other bytes (a fresh nonce), so a caller's own retry of a message reuses the bytes still pending,
        and one already stored is recognised by its content.
        """
        validate_message_id(session_message.message_id)
        plain = codec.encode(session_message)
        self._io(
            functools.partial(
                self._create_message, session_id=session_id, agent_id=agent_id, message=session_message, plain=plain
            )
        )

    async def _create_message(
        self, io: Driver, session_id: str, agent_id: str, message: SessionMessage, plain: bytes
    ) -> None:
        message_id = message.message_id
        key = self.keys.message(session_id, agent_id, message_id)
        pending = self._unconfirmed.pop((session_id, agent_id), [])
        again = [raw for number, raw in pending if number == message_id and self.values.open(key, raw) == plain]
        record = (message_id, again[0] if again else self.values.seal(key, plain))
        batch = [*(item for item in pending if not (again and item[0] == message_id)), record]
        telemetry.retried(len(batch) - 1)
        try:
            await self._append(io, session_id, agent_id, batch)
        except SessionException as error:
            if len(batch) == 1 and await self._stored_as_is(io, error, key, plain):
                return
            if not errors.refused(error.__cause__):  # failed on the wire, not refused by the script: re-send
                self._unconfirmed[session_id, agent_id] = batch
                logger.debug(
                    "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | append unconfirmed, will re-send",
                    session_id,
                    agent_id,
                    [message_id for message_id, _ in batch],
                )
            raise
        if session_id == self.session_id:
            self._listing.wrote(self._deadline, message)

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

    @telemetry.traced(telemetry.READ_MESSAGE)
    def read_message(self, session_id: str, agent_id: str, message_id: int, **kwargs: Any) -> SessionMessage | None:
        """Read a message, or ``None``."""
        key = self.keys.message(session_id, agent_id, message_id)
        with _errors("read message", key):
            (raw,) = self._io(lambda io: replication.read_on(io, key, ("GET", key), **{NEVER_DECODE: True}), now=True)
        return None if raw is None else codec.load_record(SessionMessage, raw, key, self.values)

    @telemetry.traced(telemetry.UPDATE_MESSAGE)
    def update_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """Update an existing message (a redaction), keeping its ``created_at``; one round trip."""
        message_id = session_message.message_id
        key = self.keys.message(session_id, agent_id, message_id)

        async def update(io: Driver) -> None:
            session_message.created_at, _ = await self._write_record(
                io,
                "update message",
                session_id,
                key,
                session_message,
                mode="update",
                not_found=f"Message {message_id} does not exist",
            )

        self._io(update)

    @telemetry.traced(telemetry.LIST_MESSAGES)
    def list_messages(
        self, session_id: str, agent_id: str, limit: int | None = None, offset: int = 0, **kwargs: Any
    ) -> list[SessionMessage]:
        """List an agent's messages by id, as FileSessionManager does: two round trips, two commands.

        A message listed in the index but missing from Valkey (evicted, deleted by hand, or of
        another Valkey type) is logged as a warning naming its id, and the rest are returned.
        """
        prefetched = self._prefetched.pop((MESSAGES, agent_id), None)
        if prefetched is not None and prefetched[0] == offset and limit is None:
            listed: list[SessionMessage] = prefetched[1]
            return listed
        return self._io(  # type: ignore[no-any-return]
            functools.partial(
                self._list_messages, session_id=session_id, agent_id=agent_id, limit=limit, offset=offset
            ),
            now=True,
        )

    async def _list_messages(
        self, io: Driver, session_id: str, agent_id: str, limit: int | None, offset: int
    ) -> list[SessionMessage]:
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
            numbers = [int(message_id) for message_id in ids]
        except ValueError as error:
            raise SessionException(f"key=<{ids_key}> | list messages failed: a member is not a message id") from error
        keys = self.keys.message_keys(session_id, agent_id, numbers)
        with _errors("list messages", ids_key):  # bytes whatever the client decodes: the codec names a bad key
            (values,) = await replication.read_on(io, ids_key, ("MGET", *keys), **{NEVER_DECODE: True})
        missing = [number for number, raw in zip(numbers, values, strict=True) if raw is None]
        if missing:
            logger.warning(
                "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | messages listed in %s are missing from "
                "Valkey (evicted, deleted or of another type); restoring the others",
                session_id,
                agent_id,
                missing,
                ids_key,
            )
        found = [(key, raw) for key, raw in zip(keys, values, strict=True) if raw is not None]
        self._exist(session_id, ids_key, *(key for key, _ in found))
        telemetry.restored(len(found))
        return [codec.load_record(SessionMessage, raw, key, self.values) for key, raw in found]

    # -- multi-agent (Swarm, Graph) ---------------------------------------------------------

    @telemetry.traced(telemetry.CREATE_MULTI_AGENT)
    def create_multi_agent(self, session_id: str, multi_agent: MultiAgentBase, **kwargs: Any) -> None:
        """Create (or overwrite) a Swarm's or Graph's state in the session."""
        key = self.keys.multi_agent(session_id, multi_agent.id)
        suffix = self.keys.multi_agent_suffix(multi_agent.id)
        state = multi_agent.serialize_state()

        async def create(io: Driver) -> None:
            await self._write_record(io, "create multi-agent", session_id, key, state, suffix=suffix)
            self._exist(session_id, key, self.keys.lock(session_id, suffix))

        self._io(create)

    @telemetry.traced(telemetry.READ_MULTI_AGENT)
    def read_multi_agent(self, session_id: str, multi_agent_id: str, **kwargs: Any) -> dict[str, Any] | None:
        """Read a Swarm's or Graph's state, or ``None``; slides the session's expiry."""
        key = self.keys.multi_agent(session_id, multi_agent_id)
        raw = self._io(
            functools.partial(self._read_record, operation="read multi-agent", session_id=session_id, key=key),
            now=True,
        )
        if raw is None:
            return None
        self._exist(session_id, key, self.keys.lock(session_id, self.keys.multi_agent_suffix(multi_agent_id)))
        return codec.loads(raw, key, self.values)

    @telemetry.traced(telemetry.UPDATE_MULTI_AGENT)
    def update_multi_agent(self, session_id: str, multi_agent: MultiAgentBase, **kwargs: Any) -> None:
        """Update an existing Swarm's or Graph's state; ``SessionException`` if it was never created.

        As FileSessionManager, which checks that the state exists before it writes: a state that cannot be
        stored (not a dict, not JSON) is "does not exist" for an unknown id, and its own error otherwise.
        """
        key = self.keys.multi_agent(session_id, multi_agent.id)
        not_found = f"MultiAgent state {multi_agent.id} in session {session_id} does not exist"
        state = multi_agent.serialize_state()

        async def update(io: Driver) -> None:
            try:
                if not isinstance(state, dict):
                    raise TypeError(
                        f"multi_agent_id=<{multi_agent.id}> | serialize_state() returned {type(state).__name__}, "
                        "not a dict"
                    )
                await self._write_record(
                    io, "update multi-agent", session_id, key, state, mode="update", not_found=not_found
                )
            except (TypeError, ValueError):  # refused before anything was sent
                with _errors("update multi-agent", key):
                    (exists,) = await replication.read_on(io, key, ("EXISTS", key))
                if not exists:
                    raise SessionException(not_found) from None
                raise

        self._io(update)

    # -- the session manager side -----------------------------------------------------------

    @telemetry.traced(telemetry.APPEND_MESSAGE)
    def append_message(self, message: Message, agent: LocalAgent, **kwargs: Any) -> None:
        """Append a message to the agent's session (``create_message``: one round trip, failed writes re-sent).

        The SDK's own version, but the message is tracked before the write rather than after it: the SDK
        appended it to ``agent.messages`` already, so it is the agent's latest whatever happens next.
        """
        latest = sdk.latest_message(self, agent.agent_id)
        session_message = SessionMessage.from_message(message, latest.message_id + 1 if latest else 0)
        sdk.track_appended(self, agent.agent_id, session_message)
        self.create_message(self.session_id, agent.agent_id, session_message)

    def register_hooks(self, registry: HookRegistry, **kwargs: Any) -> None:
        """Register the SDK's hooks, and store anew a message the framework replaced (``MessageUpdatedEvent``).

        A ``BidiAgent`` appends each reply as it starts (empty, pending) and replaces it once streamed: without
        this, the stored conversation would keep the empty reply (as the SDK's FileSessionManager does).
        """
        hooks: Any = registry if isinstance(self._driver, SyncDriver) else _AsyncHooks(registry, self)
        super().register_hooks(hooks, **kwargs)
        hooks.add_callback(
            MessageUpdatedEvent, lambda event: self._update_tracked(event.agent, event.tracking_id, event.message)
        )

    def _update_tracked(self, agent: LocalAgent, tracking_id: str, message: Message) -> None:
        """Store a replaced message under its id: the held record with its ``tracking_id`` (one round trip)."""
        for record in reversed(sdk.held_records(self, agent.agent_id)):
            if record.message.get("tracking_id") == tracking_id:
                record.message = message
                self.update_message(self.session_id, agent.agent_id, record)
                return
        logger.warning(
            "session_id=<%s>, agent_id=<%s>, tracking_id=<%s> | a replaced message is no longer held: its stored "
            "version stays as it was appended",
            self.session_id,
            agent.agent_id,
            tracking_id,
        )

    sync_agent = telemetry.traced(telemetry.SYNC_AGENT)(RepositorySessionManager.sync_agent)
    sync_multi_agent = telemetry.traced(telemetry.SYNC_MULTI_AGENT)(RepositorySessionManager.sync_multi_agent)

    # -- invocations: kept alive, and locked with lock_timeout (invocation.py, lock.py) -------

    @telemetry.traced(telemetry.RESTORE_AGENT)
    def initialize(self, agent: LocalAgent, **kwargs: Any) -> None:
        """Restore or create the agent; its invocations keep the session alive (and take the lock, if on).

        On the loop ``open()`` ran on, the restore's writes (a new agent's record) are sent by the next hook.
        """
        self._restoring(functools.partial(RepositorySessionManager.initialize, self, agent, **kwargs))
        if self._heartbeat.needed:
            member = None
            if self._lock is not None:
                newest = functools.partial(self._newest_message_id, agent.agent_id)
                reload: Callable[[], Any] = functools.partial(self._reload_agent, agent)
                if not isinstance(self._driver, SyncDriver):
                    reload = functools.partial(self._reload_agent_async, agent)
                member = self._lock.agent(agent, reload, newest)
            self._heartbeat.guard(agent, member)

    @telemetry.traced(telemetry.RESTORE_MULTI_AGENT)
    def initialize_multi_agent(self, source: MultiAgentBase, **kwargs: Any) -> None:
        """Restore or create a Swarm's or Graph's state; its runs keep the session alive (and lock it, if on)."""
        self._restoring(functools.partial(RepositorySessionManager.initialize_multi_agent, self, source, **kwargs))
        if self._heartbeat.needed:
            member = None
            if self._lock is not None:
                reload = functools.partial(RepositorySessionManager.initialize_multi_agent, self, source)
                member = self._lock.multi_agent(source, reload)
            self._heartbeat.guard(source, member)

    def _newest_message_id(self, agent_id: str) -> str:
        latest = sdk.latest_message(self, agent_id)
        return "" if latest is None else str(latest.message_id)

    def _reload_agent(self, agent: LocalAgent) -> None:
        """Restore the agent again from what is stored (another invocation wrote to it since we read it)."""
        agent_id = agent.agent_id
        sdk.forget_agent(self, agent_id)
        unconfirmed = self._unconfirmed.pop((self.session_id, agent_id), None)
        if unconfirmed:
            logger.warning(
                "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | another invocation wrote to the agent since "
                "these appends failed; continuing from what is stored without them",
                self.session_id,
                agent_id,
                [message_id for message_id, _ in unconfirmed],
            )
        self._restoring(functools.partial(RepositorySessionManager.initialize, self, agent))

    async def _reload_agent_async(self, agent: LocalAgent) -> None:
        """:meth:`_reload_agent` with its reads awaited first (an asyncio client)."""
        await self._prefetch(agent.agent_id)
        self._reload_agent(agent)

    # -- the SDK's held-record bookkeeping, amortised (held_records.py) ----------------------

    def _prune_held_records(self, agent: LocalAgent) -> None:
        """Where the SDK's sync prunes its held records (a walk of every message): note the sync instead."""
        self._held.synced(agent)

    @telemetry.traced(telemetry.REDACT_MESSAGE)
    def redact_latest_message(self, redact_message: Message, agent: LocalAgent, **kwargs: Any) -> None:
        """Redact the latest message (and its aliases from a retried prompt), exactly as the SDK does."""
        self._held.before_redaction(agent.agent_id)
        super().redact_latest_message(redact_message, agent, **kwargs)


#: The private loop of each asyncio client given to a manager: shared by its managers (one per request, often), so
#: they share its connections. It goes with the client (closed when the client is garbage collected).
_PRIVATE_LOOPS: weakref.WeakKeyDictionary[AsyncClient, ClientLoop] = weakref.WeakKeyDictionary()


def _private_loop(client: AsyncClient) -> ClientLoop:
    with _PRIVATE_LOCK:
        found = _PRIVATE_LOOPS.get(client)
        if found is None:
            found = _PRIVATE_LOOPS[client] = ClientLoop(
                functools.partial(_clone, weakref.ref(client)), "valkey-session"
            )
            weakref.finalize(client, found.close)
        return found


def _clone(client: weakref.ref[AsyncClient]) -> AsyncClient:
    """Clone the client a private loop serves (held weakly: the loop must not keep it alive; its managers do)."""
    alive = client()
    if alive is None:  # pragma: no cover - a manager holds its client while it may call
        raise RuntimeError("the asyncio client of this private loop is gone")
    return clone_client(alive)


_PRIVATE_LOCK = threading.Lock()


def _close_built(client: Client | AsyncClient) -> None:
    """Disconnect a client ``from_url`` built: an asyncio one was used only through its private loop, closed here."""
    if isinstance(client, AsyncClient):
        with _PRIVATE_LOCK:
            private = _PRIVATE_LOOPS.pop(client, None)
        if private is not None:
            private.close()
    else:
        client.close()  # type: ignore[no-untyped-call]


#: The threads ``open()`` runs constructors in (each awaiting its I/O on the opening loop).
_OPENERS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="valkey-session-open")


def _construct(
    loop: asyncio.AbstractEventLoop, cls: type[ValkeySessionManager], session_id: str, client: Any, options: Any
) -> ValkeySessionManager:
    """Build a manager in an ``open()`` thread: its I/O is awaited on ``loop`` (``_io``)."""
    token = _OPENING_ON.set(loop)
    try:
        return cls(session_id, client, **options)
    finally:
        _OPENING_ON.reset(token)


def _log_listing_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("owner's listing not updated, the next listing repairs it: %s", task.exception())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _AsyncHooks:
    """The SDK's hook registration, for an asyncio client: each callback becomes an awaited one (``_deferring``).

    ``AgentInitializedEvent`` and ``MultiAgentInitializedEvent`` stay synchronous (the SDK forbids async
    callbacks there).
    """

    def __init__(self, registry: HookRegistry, manager: ValkeySessionManager) -> None:
        self.registry, self.manager = registry, manager

    def add_callback(self, event_type: Any, callback: Callable[[Any], Any]) -> None:
        if event_type in (AgentInitializedEvent, MultiAgentInitializedEvent):
            self.registry.add_callback(event_type, callback)
        else:
            self.registry.add_callback(event_type, self.manager._deferring(callback))
