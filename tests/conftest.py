"""Fixtures: a real valkey-server on a free loopback port, clients, agents on a scripted model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import valkey
import valkey.asyncio
from helpers import CommandCounter, command_counts, wait_until  # noqa: F401  (re-exported for test files)
from strands import Agent
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage, scripts
from strands_valkey_session_manager.local_cluster import LocalCluster
from strands_valkey_session_manager.local_server import LocalValkey
from strands_valkey_session_manager.scripted_model import ScriptedModel

# The server binary tests run against; .ci/run also runs the core suite on redis-server.
SERVER_BINARY = os.environ.get("TEST_SERVER_BINARY", "valkey-server")


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
    for script in scripts.ALL:
        c.script_load(script.source)
    yield c
    c.close()


@pytest.fixture
def client(server: LocalValkey) -> Iterator[valkey.Valkey]:
    """A ``decode_responses=True`` client on an empty server."""
    c = server.client()
    c.flushall()
    for script in scripts.ALL:  # steady state: command counts never include a one-off SCRIPT LOAD
        c.script_load(script.source)
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
