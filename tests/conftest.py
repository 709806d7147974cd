"""Fixtures: a real valkey-server on a free loopback port, clients, agents on a scripted model."""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import valkey
import valkey.asyncio
from cli_support import PNG, invoke, lookup
from helpers import (  # noqa: F401  (re-exported for test files)
    AsyncCountingConnection,
    CommandCounter,
    CountingConnection,
    command_counts,
    wait_until,
)
from strands import Agent
from strands.multiagent import Swarm
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import SessionDirectory, ValkeySessionManager, ValkeyStorage, runner, scripts
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey, embedded_server, find_server

# The server binary tests run against ($TEST_SERVER_BINARY; scripts/test runs the core files on Valkey 9.1 and
# Redis 7 too), by default as the testing kit finds one: valkey-server on PATH, else the embedded Valkey 9.1.
SERVER_BINARY = os.environ.get("TEST_SERVER_BINARY") or find_server().path


@pytest.fixture(scope="session")
def server() -> Iterator[LocalValkey]:
    """One valkey-server for the whole run, in a temp dir, stopped by its pid at the end."""
    with LocalValkey(binary=SERVER_BINARY, args=["--enable-debug-command", "yes"]) as local:
        yield local


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """One 3-master + 3-replica cluster for the whole run (started on first use), stopped by pid at the end."""
    with LocalCluster(binary=SERVER_BINARY) as local:
        yield local


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[ValkeyCluster]:
    """A ``decode_responses=True`` ``ValkeyCluster`` client on an emptied cluster, scripts loaded on every primary."""
    c = cluster.client()
    c.flushall()  # on every primary
    scripts.load(c)
    yield c
    c.close()


@pytest.fixture(scope="session")
def tls_server() -> Iterator[LocalValkey]:
    """A TLS-only server (``--port 0``); ``tls_server.tls_files.ca`` is the CA, ``tls_server.url`` a valkeys:// URL."""
    if SERVER_BINARY == embedded_server():
        pytest.skip("the embedded Valkey is built without TLS: TLS runs on a system valkey-server")
    with LocalValkey(binary=SERVER_BINARY, tls=True) as local:
        yield local


@pytest.fixture
def client(server: LocalValkey) -> Iterator[valkey.Valkey]:
    """A ``decode_responses=True`` client on an empty server."""
    c = server.client()
    c.flushall()
    scripts.load(c)  # steady state: command counts never include a one-off SCRIPT LOAD or FUNCTION LOAD
    yield c
    c.close()


@pytest.fixture
def raw_client(server: LocalValkey, client: valkey.Valkey) -> Iterator[valkey.Valkey]:
    """A ``decode_responses=False`` client on the same (emptied) server."""
    c = server.client(decode_responses=False)
    yield c
    c.close()


@pytest.fixture
def make_agent() -> Callable[..., Agent]:
    """Build an Agent on the scripted model: ``make_agent(session_manager, agent_id, replies=...)``."""

    def build(session_manager: Any, agent_id: str = "assistant", replies: Any = (), **kwargs: Any) -> Agent:
        return Agent(
            agent_id=agent_id,
            model=ScriptedModel(replies),
            session_manager=session_manager,
            callback_handler=None,
            **kwargs,
        )

    return build


@pytest.fixture
def manager(client: valkey.Valkey) -> Callable[..., ValkeySessionManager]:
    """Build managers on the test client: ``manager("user-42", ttl=60)``."""

    def build(session_id: str = "user-42", **kwargs: Any) -> ValkeySessionManager:
        return ValkeySessionManager(session_id=session_id, client=kwargs.pop("client", client), **kwargs)

    return build


@pytest.fixture
def storage_kind(request: pytest.FixtureRequest) -> str:
    """The kind of client a storage test's ``ValkeyStorage`` gets: "asyncio" (valkey-py's), "glide" (``glide_sync``)
    or "glide-asyncio" (asyncio ``glide``): "asyncio" always, the GLIDE kinds $TEST_CLIENT_KINDS selects."""
    return str(request.param)


@pytest.fixture
def make_storage(
    server: LocalValkey, client: valkey.Valkey, storage_kind: str
) -> Iterator[Callable[..., ValkeyStorage]]:
    """Build ``ValkeyStorage`` on the (emptied) test server: ``make_storage(ttl=60)``; closed at teardown."""
    made: list[ValkeyStorage] = []

    def build(**kwargs: Any) -> ValkeyStorage:
        given = valkey.asyncio.Valkey(port=server.port) if storage_kind == "asyncio" else twin_of(client, storage_kind)
        made.append(ValkeyStorage(given, **kwargs))
        return made[-1]

    yield build
    for storage in made:
        storage.close()


# -- the CLI's tests (tests/test_cli_*.py; helpers in cli_support.py) -------------------------------


@pytest.fixture
def cli(
    request: pytest.FixtureRequest, server: LocalValkey, client: valkey.Valkey, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """``cli("keys", "user-42")``: run a ``strands-valkey`` command in-process against the (emptied) test server.

    Parametrized indirectly with "glide" (``@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)``),
    its commands use a GLIDE client ($STRANDS_VALKEY_CLIENT=glide).
    """
    monkeypatch.setenv("STRANDS_VALKEY_CLIENT", getattr(request, "param", "valkey"))

    def run(*args: str, input: str | None = None) -> Any:
        return invoke(*args, "--url", server.url, input=input)

    return run


@pytest.fixture
def seed(client: valkey.Valkey, make_agent: Callable[..., Agent]) -> Callable[..., None]:
    """``seed("user-42")``: a session whose agents ran for real: tool use, an image, agent state (and a Swarm)."""

    def build(
        session_id: str = "user-42",
        ttl: int | None = 3600,
        agents: tuple[str, ...] = ("researcher", "writer"),
        swarm: bool = False,
    ) -> None:
        if swarm:
            node = Agent(name="node", agent_id="node", model=ScriptedModel(["done"]), callback_handler=None)
            Swarm([node], session_manager=ValkeySessionManager(session_id=session_id, client=client, ttl=ttl))("task")
        for agent_id in agents:
            manager = ValkeySessionManager(session_id=session_id, client=client, ttl=ttl)
            replies: list[Any] = [{"tool": "lookup", "input": {"topic": "valkey"}}, "Valkey is fast."]
            agent = make_agent(manager, agent_id, replies=replies, tools=[lookup])
            agent.state.set("stage", "draft")
            agent("Research Valkey.")
            agent([{"text": "What is in this picture?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}])

    return build


#: Each synchronous test client's asyncio twin (made once: the managers of one test share it, as an app's do).
_TWINS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def as_asyncio(client: Any) -> Any:
    """The ``valkey.asyncio`` twin of a synchronous test client (made once per client)."""
    if client not in _TWINS:
        twin = _TWINS[client] = _twin(client)
        # Connect its managers' private loop now, as helpers.counting_client does: the handshake is not ours.
        with contextlib.suppress(valkey.ValkeyError):  # a server a test made unreachable: its manager says so
            runner.private_loop(twin).call(lambda loop_client: loop_client.ping())
    return _TWINS[client]


def _twin(client: Any) -> Any:
    """The ``valkey.asyncio`` twin of a synchronous test client: same server (or cluster), decoding, pool size, and
    a connection that counts its round trips if the original's does (helpers.CountingConnection)."""
    if isinstance(client, ValkeyCluster):
        node = client.get_default_node()
        decode = client.get_connection_kwargs().get("decode_responses", False)
        return valkey.asyncio.ValkeyCluster(host=node.host, port=node.port, decode_responses=decode)
    pool = client.connection_pool
    counting = issubclass(pool.connection_class, CountingConnection)
    kinds = {"host", "port", "db", "username", "password", "decode_responses", "socket_timeout"}
    options = {name: value for name, value in pool.connection_kwargs.items() if name in kinds}
    twin = valkey.asyncio.ConnectionPool(
        connection_class=AsyncCountingConnection if counting else valkey.asyncio.Connection,
        max_connections=pool.max_connections,
        **options,
    )
    return valkey.asyncio.Valkey.from_pool(twin)


#: The kinds of client a ``client_kind`` test runs on: valkey-py's (sync, asyncio) and GLIDE's (glide: glide_sync,
#: glide-asyncio: glide). ``$TEST_CLIENT_KINDS`` (comma-separated) selects some: scripts/test runs the GLIDE kinds
#: on some servers only (CI time).
CLIENT_KINDS = ("sync", "asyncio", "glide", "glide-asyncio")
SELECTED_KINDS = [kind for kind in os.environ.get("TEST_CLIENT_KINDS", ",".join(CLIENT_KINDS)).split(",") if kind]
_unknown_kinds = set(SELECTED_KINDS) - set(CLIENT_KINDS)
if _unknown_kinds:
    raise ValueError(f"TEST_CLIENT_KINDS: unknown kinds {sorted(_unknown_kinds)}; the kinds are {CLIENT_KINDS}")
#: Twins by kind: made once per test client, the managers of one test share them, as an app's do.
_KIND_TWINS: dict[str, weakref.WeakKeyDictionary[Any, Any]] = {
    kind: weakref.WeakKeyDictionary() for kind in CLIENT_KINDS
}


def twin_of(client: Any, kind: str) -> Any:
    """The ``kind`` twin of a synchronous test client (made once per client): same server (or cluster), database
    and credentials; for "sync", the client itself."""
    if kind == "sync":
        return client
    if kind == "asyncio":
        return as_asyncio(client)
    twins = _KIND_TWINS[kind]
    if client not in twins:
        twins[client] = glide_twin(client, asyncio=kind == "glide-asyncio")
    return twins[client]


def glide_twin(client: Any, asyncio: bool) -> Any:
    """A GLIDE client on the server (or cluster) of a valkey-py test client; an asyncio one is made on the GLIDE
    loop thread (``glide_loop``), whose loop it then belongs to."""
    import glide
    import glide_sync

    if isinstance(client, ValkeyCluster):
        node = client.get_default_node()
        config: Any = glide_sync.GlideClusterClientConfiguration(
            [glide_sync.NodeAddress(node.host, node.port)], request_timeout=5000, lazy_connect=True
        )
        kinds = (glide.GlideClusterClient, glide_sync.GlideClusterClient)
    else:
        settings = client.connection_pool.connection_kwargs
        password = settings.get("password")
        config = glide_sync.GlideClientConfiguration(
            [glide_sync.NodeAddress(settings.get("host", "localhost"), settings.get("port", 6379))],
            database_id=settings.get("db") or None,
            credentials=glide_sync.ServerCredentials(password, settings.get("username")) if password else None,
            request_timeout=int(1000 * (settings.get("socket_timeout") or 5)),
            lazy_connect=True,  # as valkey-py's: a server a test made unreachable is its manager's to report
        )
        kinds = (glide.GlideClient, glide_sync.GlideClient)
    if asyncio:
        return glide_loop().call(lambda: kinds[0].create(config))
    return kinds[1].create(config)


class _GlideLoop:
    """An event loop in a daemon thread, for the asyncio GLIDE twins (a GLIDE asyncio client belongs to its loop)."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="glide-twins", daemon=True).start()

    def call(self, make: Callable[[], Any]) -> Any:
        import asyncio

        async def run() -> Any:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)


@functools.cache
def glide_loop() -> _GlideLoop:
    """The one loop thread of the asyncio GLIDE twins (started on first use)."""
    return _GlideLoop()


def _count_glide_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count each GLIDE request (a command, or a batch: one round trip) in ``CountingConnection.round_trips``.

    The real calls, counted as CountingConnection counts valkey-py's; an asyncio GLIDE twin's manager sends through a
    glide_sync client off the client's loop (driver_glide.SyncTwin), which is counted here too.
    """
    import glide
    import glide_sync

    for kind in (glide_sync.GlideClient, glide_sync.GlideClusterClient, glide.GlideClient, glide.GlideClusterClient):
        for name in ("custom_command", "exec"):
            original = getattr(kind, name)

            def counted(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                CountingConnection.round_trips += 1
                return __original(self, *args, **kwargs)

            monkeypatch.setattr(kind, name, counted)


@pytest.fixture
def client_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per kind of client: every manager it builds gets that kind's twin of its client.

    "sync": valkey-py's synchronous client as given; "asyncio": its ``valkey.asyncio`` twin; "glide" and
    "glide-asyncio": a GLIDE twin (``glide_sync``, asyncio ``glide``) on the same server or cluster (a
    ``SessionDirectory`` gets the ``glide_sync`` one for both: it is synchronous). The test's own
    ``client`` (what it inspects the store with) stays valkey-py's. A test marked ``sync_client_only`` (it drives
    the synchronous client's own objects: its pool, its connections) runs once; one marked ``valkey_py_only``
    (it drives what GLIDE has not: a held connection, valkey-py's own retry settings) runs on valkey-py's kinds.
    """
    kind = str(request.param)
    if kind != "sync":
        original = ValkeySessionManager.__init__

        @functools.wraps(original)  # its signature too: from_url reads the constructor's options from it
        def init(self: ValkeySessionManager, *args: Any, **kwargs: Any) -> None:
            if "client" in kwargs:
                kwargs["client"] = twin_of(kwargs["client"], kind)
            elif len(args) > 1:
                args = (args[0], twin_of(args[1], kind), *args[2:])
            original(self, *args, **kwargs)

        monkeypatch.setattr(ValkeySessionManager, "__init__", init)
        if kind.startswith("glide"):  # SessionDirectory takes synchronous clients: glide_sync's for both GLIDE kinds
            listing = SessionDirectory.__init__

            @functools.wraps(listing)
            def directory_init(self: SessionDirectory, client: Any, *args: Any, **kwargs: Any) -> None:
                listing(self, twin_of(client, "glide"), *args, **kwargs)

            monkeypatch.setattr(SessionDirectory, "__init__", directory_init)
        made = getattr(request.module, "counting_client", None)
        if made is not None:  # its twin connected at once too, before the test counts
            monkeypatch.setattr(request.module, "counting_client", lambda *args: _twinned(made(*args), kind))
            if kind.startswith("glide"):
                _count_glide_round_trips(monkeypatch)
    return kind


def _twinned(client: Any, kind: str) -> Any:
    twin_of(client, kind)
    return client


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``client_kind``: the selected kinds (``$TEST_CLIENT_KINDS``), fewer for a test marked so."""
    if "client_kind" in metafunc.fixturenames:
        kinds = SELECTED_KINDS
        if metafunc.definition.get_closest_marker("sync_client_only") is not None:
            kinds = [kind for kind in kinds if kind == "sync"] or ["sync"]
        elif metafunc.definition.get_closest_marker("valkey_py_only") is not None:
            kinds = [kind for kind in kinds if not kind.startswith("glide")] or ["sync"]
        metafunc.parametrize("client_kind", kinds, indirect=True)
    if "storage_kind" in metafunc.fixturenames:
        # valkey-py's asyncio storage on every server; GLIDE's where $TEST_CLIENT_KINDS selects it
        storage_kinds = ["asyncio", *(kind for kind in SELECTED_KINDS if kind.startswith("glide"))]
        if metafunc.definition.get_closest_marker("valkey_py_only") is not None:
            storage_kinds = ["asyncio"]
        metafunc.parametrize("storage_kind", storage_kinds, indirect=True)
