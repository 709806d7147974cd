"""Fixtures: a real valkey-server on a free loopback port, clients, agents on a scripted model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import valkey
import valkey.asyncio
from cli_support import PNG, invoke, lookup
from helpers import CommandCounter, command_counts, wait_until  # noqa: F401  (re-exported for test files)
from strands import Agent
from strands.multiagent import Swarm
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage, scripts
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
def make_storage(server: LocalValkey, client: valkey.Valkey) -> Iterator[Callable[..., ValkeyStorage]]:
    """Build ``ValkeyStorage`` on the (emptied) test server: ``make_storage(ttl=60)``; closed at teardown."""
    made: list[ValkeyStorage] = []

    def build(**kwargs: Any) -> ValkeyStorage:
        made.append(ValkeyStorage(valkey.asyncio.Valkey(port=server.port), **kwargs))
        return made[-1]

    yield build
    for storage in made:
        storage.close()


# -- the CLI's tests (tests/test_cli_*.py; helpers in cli_support.py) -------------------------------


@pytest.fixture
def cli(server: LocalValkey, client: valkey.Valkey) -> Callable[..., Any]:
    """``cli("keys", "user-42")``: run a ``strands-valkey`` command in-process against the (emptied) test server."""

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
