"""Valkey session manager: Strands Agents sessions kept in Valkey (or Redis OSS 7)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from strands.hooks import HookRegistry, MessageUpdatedEvent
from strands.session.repository_session_manager import RepositorySessionManager
from strands.session.session_repository import SessionRepository
from strands.types.content import Message
from strands.types.exceptions import SessionException
from strands.types.session import Session, SessionAgent, SessionMessage

from . import codec, connection, directory, errors, replication, runner, scripts, sdk, telemetry
from .held_records import HeldRecords
from .invocation import Heartbeat
from .keys import AGENT, MESSAGES, MULTI_AGENT, KeySchema, validate_id, validate_message_id
from .lock import Member, SessionLock
from .options import Client, ttl_ms
from .runner import Runner
from .storage.client_loop import AsyncClient
from .store import SessionStore
from .values import DEFAULT_MAX_VALUE_BYTES, Keyring, Values

if TYPE_CHECKING:
    from strands.multiagent.base import MultiAgentBase
    from strands.types.agent import LocalAgent

logger = logging.getLogger(__name__)

#: Set by ``open()`` while it builds a manager: the SDK's constructor waits until the session has been read, awaited.
_OPENING: contextvars.ContextVar[bool] = contextvars.ContextVar("valkey_session_opening", default=False)

#: ``with _errors(operation, key[, not_found]):`` turns what Valkey raises into a ``SessionException``.
_errors = functools.partial(errors.translated, SessionException)

DEFAULT_TTL = 3600

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
    while that deadline is known and not due (store.py).
    With ``lock_timeout`` set, invocations of one agent (or Swarm/Graph) run one at a time (lock.py).

    This class is the SDK's side: its repository methods and hooks. Each read and write is an operation of
    the session's :class:`~.store.SessionStore` (store.py), run on the client by a :class:`~.runner.Runner`
    (runner.py: on the calling thread, or awaited without blocking an event loop).
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
        asyncio_client = connection.is_asyncio(client)
        cluster = connection.check_client(client, "ValkeySessionManager", asyncio_client, glide=True)  # sends nothing
        self._runner = Runner(client)
        self._prefetched: dict[tuple[str, str], Any] = {}  # what open() read for the agents' restores
        keys = KeySchema(key_prefix, cluster=cluster)
        self.ttl_ms = ttl_ms(ttl)
        lock = None
        if lock_timeout is not None:
            lock = SessionLock(
                self._run_lock, keys, session_id, lock_timeout, lock_lease, self.ttl_ms, self._await_lock
            )
        self._lock = lock
        listing = directory.Listing(self._runner.script, keys, session_id, self.ttl_ms, lambda: self.store.server_ms())
        listing.titles = encryption is None  # the first message's text is never kept in clear
        self._listing = listing
        self._heartbeat = Heartbeat(
            session_id, self.ttl_ms, self._keep_alive, lock, listing.kept_alive, self._keep_alive_async
        )
        values = Values(encryption, compression, max_value_bytes)
        wait = replication.WaitForReplicas(wait_replicas, wait_timeout_ms) if wait_replicas else None
        self.store = SessionStore(session_id, keys, self.ttl_ms, values, wait, lock, listing, self._heartbeat, owner)
        self._held = HeldRecords(self)
        self._repository_options = kwargs
        self._opened: tuple[Session, bool] | None = None  # the session as open() read (or created) it, awaited
        if not _OPENING.get():  # open() starts it once it has read the session
            self._start()

    def _start(self) -> None:
        """Run the SDK's constructor (it reads the session, and creates it if there is none), then list the session."""
        super().__init__(session_id=self.store.session_id, session_repository=self, **self._repository_options)
        self._opened = None
        self.store.opening = False
        if self.store.joined_existing:
            key = self.keys.session(self.session_id)
            with _errors("read session", key):
                raw = self._runner.now(lambda io: self.store.read(io, key))
            if raw is not None:
                codec.load_record(Session, raw, key, self.values)  # a foreign value: said so first
            self.store.check_owner(key, raw)  # the concurrent creator's owner, before anything is written
            # Another process created the session between our read and our create: use theirs,
            # and restore agents from it rather than treating it as empty.
            sdk.restore_from_session(self)
            self.session = self.read_session(self.session_id) or self.session
        self._listing.opened()

    @property
    def client(self) -> Client | AsyncClient:
        """The client this manager sends through (the caller's: ``close()`` leaves it open, unless built here)."""
        return self._runner.client

    @client.setter
    def client(self, client: Client | AsyncClient) -> None:
        self._runner.client = client

    @property
    def keys(self) -> KeySchema:
        """The session's key layout (keys.py)."""
        return self.store.keys

    @property
    def values(self) -> Values:
        """How values are sealed and opened (values.py)."""
        return self.store.values

    @property
    def owner(self) -> str | None:
        """Who the session belongs to (``None``: no owner)."""
        return self.store.owner

    @classmethod
    async def open(
        cls, session_id: str, client: AsyncClient, *, agent_ids: Sequence[str] | None = None, **options: Any
    ) -> ValkeySessionManager:
        """Open ``session_id`` from async code: every read awaited on this loop, then ``Agent(...)`` sends nothing.

        The session is read (and created, if there is none) awaited on this loop, then the SDK's constructor runs
        with nothing left to send; then the records and messages of the agents ``agent_ids`` names (default: every
        agent of the session) are read, so that an agent built afterwards is restored from them. A new agent's
        record, written at construction, is sent by its first hook. ``client`` is then awaited directly on this
        loop (and on a private loop from any other one).

        Args:
            session_id: As for the constructor.
            client: A ``valkey.asyncio.Valkey`` or ``valkey.asyncio.ValkeyCluster``, used on this loop.
            agent_ids: The agents about to be restored (``None``: every agent of the session).
            **options: The constructor's options.

        Raises:
            As the constructor.
        """
        token = _OPENING.set(True)
        try:
            manager = cls(session_id, client, **options)  # nothing sent yet
        finally:
            _OPENING.reset(token)
        manager._runner.home_on(asyncio.get_running_loop())
        manager._opened = await manager._runner.awaited(manager.store.open_session)
        manager._runner.restoring(manager._start)  # on this loop, with nothing left to send but the listing
        await manager._runner.settled()
        for agent_id in manager.store.agent_ids() if agent_ids is None else list(agent_ids):
            await manager._prefetch(agent_id)
        return manager

    async def _prefetch(self, agent_id: str) -> None:
        """Read (awaited) what restoring the agent reads: its record and, if it exists, its messages."""
        raw, messages = await self._runner.awaited(functools.partial(self.store.prefetch, agent_id=agent_id))
        self._prefetched[AGENT, agent_id] = raw
        if raw is not None:
            self._prefetched[MESSAGES, agent_id] = messages

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
        cls,
        url: str,
        session_id: str,
        *,
        cluster: bool = False,
        asyncio: bool = False,
        client: str = "valkey",
        **options: Any,
    ) -> ValkeySessionManager:
        """Open ``session_id`` on the Valkey at ``url`` through a client built for this manager (``close()`` it).

        Args:
            url: ``valkey://[user:password@]host:port[/db]``, ``valkeys://`` for TLS (``?ssl_ca_certs=...``
                in the query, or as an option), ``redis://``, ``rediss://``, ``unix://``.
            session_id: As for the constructor.
            cluster: Build a ``ValkeyCluster`` (it finds the other nodes from the URL's one).
            asyncio: Build a ``valkey.asyncio`` client (its calls from synchronous code run on a private loop
                thread; from async code, pass a client to ``await ValkeySessionManager.open(...)`` instead).
            client: ``"valkey"`` (valkey-py) or ``"glide"``: a ``glide_sync`` client (the ``glide`` extra), whose
                settings are ``request_timeout``, ``connection_timeout`` (ms), ``ssl_ca_certs``, ``client_name``
                (connection.glide_configuration). An asyncio GLIDE client belongs to the loop it is made on:
                make it there from ``glide_configuration(url)`` and pass it to ``open()``.
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
        mine, built = connection.open_url(cls, url, asyncio, cluster, options, SessionException, client)
        try:
            manager = cls(session_id, built, **mine)
        except BaseException:
            runner.close_built(built)
            raise
        manager._owns_client = True
        return manager

    def close(self) -> None:
        """Disconnect the client if ``from_url`` built it; a client you passed in is yours and stays open.

        Without ``close()``, the connections of a built client go when the manager is garbage collected.
        """
        if self._owns_client:
            runner.close_built(self.client)

    def _run_lock(self, operation: str, member: Member, args: list[Any]) -> Any:
        """Run lua/lock.lua on a member of the session for the session lock (lock.py)."""
        return self._runner.now(functools.partial(self.store.lock_on, operation=operation, member=member, args=args))

    async def _await_lock(self, operation: str, member: Member, args: list[Any]) -> Any:
        """:meth:`_run_lock`, awaited: an asyncio client's invocation takes and releases the lock without blocking."""
        await self._runner.flush()  # a new agent's record first, as the lock's fingerprint of it expects
        operation_on = functools.partial(self.store.lock_on, operation=operation, member=member, args=args)
        return await self._runner.awaited(operation_on)

    @telemetry.traced(telemetry.KEEP_ALIVE)
    def _keep_alive(self, due_ms: int, extend_ms: int) -> None:
        """Keep the session alive while an invocation runs (invocation.py)."""
        self._runner.now(functools.partial(self.store.keep_alive, due_ms=due_ms, extend_ms=extend_ms))

    @telemetry.traced(telemetry.KEEP_ALIVE)
    async def _keep_alive_async(self, due_ms: int, extend_ms: int) -> None:
        """:meth:`_keep_alive`, awaited (the last one, as an invocation ends on its loop)."""
        await self._runner.awaited(functools.partial(self.store.keep_alive, due_ms=due_ms, extend_ms=extend_ms))

    # -- the SDK's SessionRepository: each one operation of the store -----------------------

    @telemetry.traced(telemetry.CREATE_SESSION)
    def create_session(self, session: Session, **kwargs: Any) -> Session:
        """Create a new session; ``SessionException`` if it exists (unless a concurrent open)."""
        if self._opened is not None and session.session_id == self.session_id:
            return self._opened[0]  # open() created it
        return self._runner.now(functools.partial(self.store.create_session, session=session))  # type: ignore[no-any-return]

    @telemetry.traced(telemetry.READ_SESSION)
    def read_session(self, session_id: str, **kwargs: Any) -> Session | None:
        """Read a session record, or ``None`` (opening the manager's own, its index and deadline too)."""
        if self._opened is not None and session_id == self.session_id:
            session, created = self._opened  # as open() read it, awaited: the SDK's constructor asks
            return None if created else session
        return self._runner.now(functools.partial(self.store.read_session, session_id=session_id))  # type: ignore[no-any-return]

    @telemetry.traced(telemetry.DELETE_SESSION)
    def delete_session(self, session_id: str, **kwargs: Any) -> None:
        """Delete every key of the session in one atomic step; no other session is touched."""
        self._deleted(session_id, self._runner.now(functools.partial(self.store.delete_session, session_id=session_id)))

    async def delete_session_async(self, session_id: str) -> None:
        """:meth:`delete_session`, awaited (an asyncio client: a logout in an async handler waits for nothing).

        An owned session leaves its owner's listing before this returns (awaited too).
        """
        deleted = await self._runner.awaited(functools.partial(self.store.delete_session, session_id=session_id))
        forget = self._listing.forgetting() if session_id == self.session_id else None
        if forget is not None:
            with directory.not_forgotten(session_id):
                await self._runner.awaited(lambda io: scripts.OWNER_FORGET.on(io, *forget))
        self._deleted(session_id, deleted, unlisted=forget is not None)

    def _deleted(self, session_id: str, deleted: int, unlisted: bool = False) -> None:
        """After a delete: out of the owner's listing (outside the operation: not on the client's loop), or raise."""
        if session_id == self.session_id and not unlisted:
            self._listing.deleted()
        if not deleted:
            raise SessionException(f"Session {session_id} does not exist")
        logger.debug("session_id=<%s>, keys=<%d> | deleted session", session_id, deleted)

    @telemetry.traced(telemetry.CREATE_AGENT)
    def create_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """Create (or overwrite, as FileSessionManager does) an agent in the session."""
        self._runner.later(
            functools.partial(self.store.create_agent, session_id=session_id, session_agent=session_agent)
        )

    @telemetry.traced(telemetry.READ_AGENT)
    def read_agent(self, session_id: str, agent_id: str, **kwargs: Any) -> SessionAgent | None:
        """Read an agent, or ``None``; slides the session's expiry (this is how a restore starts)."""
        key = self.keys.agent(session_id, agent_id)
        if (AGENT, agent_id) in self._prefetched:
            raw = self._prefetched.pop((AGENT, agent_id))
        else:
            walk = [self.keys.messages(session_id, agent_id)]
            read = functools.partial(self.store.read_record, operation="read agent", session_id=session_id, key=key)
            raw = self._runner.now(functools.partial(read, walk=walk))
        if raw is None:
            return None
        self.store.exist_agent(session_id, agent_id)
        self.store.stored[key] = codec.as_bytes(raw)
        return codec.load_record(SessionAgent, raw, key, self.values)

    @telemetry.traced(telemetry.UPDATE_AGENT)
    def update_agent(self, session_id: str, session_agent: SessionAgent, **kwargs: Any) -> None:
        """Update an existing agent, keeping its stored ``created_at``; one round trip."""
        agent_id = session_agent.agent_id

        async def update(io: Any) -> None:
            try:
                await self.store.update_agent(io, session_id, session_agent)
            except BaseException:  # queued by an async hook, the SDK noted it synced already: not so, next time
                if session_id == self.session_id:
                    sdk.forget_synced(self, agent_id)
                raise

        self._runner.later(update)

    @telemetry.traced(telemetry.CREATE_MESSAGE)
    def create_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """Create a message in one round trip; identical content under its id is a retry and succeeds.

        Every message write comes through here; an earlier one of the agent that failed on the wire is re-sent
        first, in the same atomic write (``SessionStore.create_message``).
        """
        validate_message_id(session_message.message_id)
        plain = codec.encode(session_message)
        create = functools.partial(self.store.create_message, session_id=session_id, agent_id=agent_id)
        self._runner.later(functools.partial(create, message=session_message, plain=plain))

    @telemetry.traced(telemetry.READ_MESSAGE)
    def read_message(self, session_id: str, agent_id: str, message_id: int, **kwargs: Any) -> SessionMessage | None:
        """Read a message, or ``None``."""
        key = self.keys.message(session_id, agent_id, message_id)
        with _errors("read message", key):
            raw = self._runner.now(lambda io: self.store.read(io, key))
        return None if raw is None else codec.load_record(SessionMessage, raw, key, self.values)

    @telemetry.traced(telemetry.UPDATE_MESSAGE)
    def update_message(self, session_id: str, agent_id: str, session_message: SessionMessage, **kwargs: Any) -> None:
        """Update an existing message (a redaction), keeping its ``created_at``; one round trip."""
        update = functools.partial(self.store.update_message, session_id=session_id, agent_id=agent_id)
        self._runner.later(functools.partial(update, session_message=session_message))

    @telemetry.traced(telemetry.LIST_MESSAGES)
    def list_messages(
        self, session_id: str, agent_id: str, limit: int | None = None, offset: int = 0, **kwargs: Any
    ) -> list[SessionMessage]:
        """List an agent's messages by id, as FileSessionManager does: two round trips, two commands."""
        prefetched = self._prefetched.pop((MESSAGES, agent_id), None)
        if prefetched is not None and prefetched[0] == offset and limit is None:
            listed: list[SessionMessage] = prefetched[1]
            return listed
        listing = functools.partial(self.store.list_messages, session_id=session_id, agent_id=agent_id)
        return self._runner.now(functools.partial(listing, limit=limit, offset=offset))  # type: ignore[no-any-return]

    @telemetry.traced(telemetry.CREATE_MULTI_AGENT)
    def create_multi_agent(self, session_id: str, multi_agent: MultiAgentBase, **kwargs: Any) -> None:
        """Create (or overwrite) a Swarm's or Graph's state in the session."""
        create = functools.partial(self.store.create_multi_agent, session_id=session_id, multi_agent_id=multi_agent.id)
        self._runner.later(functools.partial(create, state=multi_agent.serialize_state()))

    @telemetry.traced(telemetry.READ_MULTI_AGENT)
    def read_multi_agent(self, session_id: str, multi_agent_id: str, **kwargs: Any) -> dict[str, Any] | None:
        """Read a Swarm's or Graph's state, or ``None``; slides the session's expiry."""
        if (MULTI_AGENT, multi_agent_id) in self._prefetched:
            return self._prefetched.pop((MULTI_AGENT, multi_agent_id))  # type: ignore[no-any-return]
        read = functools.partial(self.store.read_multi_agent, session_id=session_id, multi_agent_id=multi_agent_id)
        return self._runner.now(read)  # type: ignore[no-any-return]

    @telemetry.traced(telemetry.UPDATE_MULTI_AGENT)
    def update_multi_agent(self, session_id: str, multi_agent: MultiAgentBase, **kwargs: Any) -> None:
        """Update an existing Swarm's or Graph's state; ``SessionException`` if it was never created."""
        update = functools.partial(self.store.update_multi_agent, session_id=session_id, multi_agent_id=multi_agent.id)
        self._runner.later(functools.partial(update, state=multi_agent.serialize_state()))

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
        hooks = self._runner.hooks(registry)
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
        self._runner.restoring(functools.partial(RepositorySessionManager.initialize, self, agent, **kwargs))
        if self._heartbeat.needed:
            member = None
            if self._lock is not None:
                newest = functools.partial(self._newest_message_id, agent.agent_id)
                reload: Callable[[], Any] = functools.partial(self._reload_agent, agent)
                if not self._runner.blocking:
                    reload = functools.partial(self._reload_agent_async, agent)
                member = self._lock.agent(agent, reload, newest)
            self._heartbeat.guard(agent, member)

    @telemetry.traced(telemetry.RESTORE_MULTI_AGENT)
    def initialize_multi_agent(self, source: MultiAgentBase, **kwargs: Any) -> None:
        """Restore or create a Swarm's or Graph's state; its runs keep the session alive (and lock it, if on)."""
        self._runner.restoring(
            functools.partial(RepositorySessionManager.initialize_multi_agent, self, source, **kwargs)
        )
        if self._heartbeat.needed:
            member = None
            if self._lock is not None:
                reload: Callable[[], Any] = functools.partial(self._reload_multi_agent, source)
                if not self._runner.blocking:
                    reload = functools.partial(self._reload_multi_agent_async, source)
                member = self._lock.multi_agent(source, reload)
            self._heartbeat.guard(source, member)

    def _reload_multi_agent(self, source: MultiAgentBase) -> None:
        """Restore a Swarm's or Graph's state again from what is stored (another run wrote it since we read it)."""
        self._runner.restoring(functools.partial(RepositorySessionManager.initialize_multi_agent, self, source))

    async def _reload_multi_agent_async(self, source: MultiAgentBase) -> None:
        """:meth:`_reload_multi_agent` with its read awaited first (an asyncio client)."""
        read = functools.partial(self.store.read_multi_agent, session_id=self.session_id, multi_agent_id=source.id)
        self._prefetched[MULTI_AGENT, source.id] = await self._runner.awaited(read)
        self._reload_multi_agent(source)

    def _newest_message_id(self, agent_id: str) -> str:
        latest = sdk.latest_message(self, agent_id)
        return "" if latest is None else str(latest.message_id)

    def _reload_agent(self, agent: LocalAgent) -> None:
        """Restore the agent again from what is stored (another invocation wrote to it since we read it)."""
        agent_id = agent.agent_id
        sdk.forget_agent(self, agent_id)
        unconfirmed = self.store.unconfirmed.pop((self.session_id, agent_id), None)
        if unconfirmed:
            logger.warning(
                "session_id=<%s>, agent_id=<%s>, message_ids=<%s> | another invocation wrote to the agent since "
                "these appends failed; continuing from what is stored without them",
                self.session_id,
                agent_id,
                [message_id for message_id, _ in unconfirmed],
            )
        self._runner.restoring(functools.partial(RepositorySessionManager.initialize, self, agent))

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
