"""The testing kit's throwaway servers: which binary they run, and a cluster made without valkey-cli."""

from __future__ import annotations

import shutil

import pytest
from helpers import NEEDS_VALKEY_SERVER_ON_PATH

from strands_valkey_session_manager.testing import LocalCluster, LocalValkey, embedded_server
from strands_valkey_session_manager.testing import server as server_module


@pytest.fixture
def no_servers_on_path(monkeypatch, tmp_path) -> None:
    """PATH with no valkey-server, redis-server or valkey-cli on it."""
    monkeypatch.setenv("PATH", str(tmp_path))


def test_local_valkey_runs_the_binary_it_is_given() -> None:
    local = LocalValkey(binary="redis-server")
    local.stop()  # removes its temp dir

    assert (local.binary, local.binary_source) == ("redis-server", "argument")
    assert repr(local).startswith("LocalValkey(binary='redis-server' (argument), port=")


@pytest.mark.parametrize("end", ["stop", "kill"])
def test_local_valkey_ended_leaves_no_open_pipe(end: str) -> None:
    local = LocalValkey().start()
    process = local.process
    assert process is not None and process.stderr is not None

    getattr(local, end)()
    local.stop()

    assert process.stderr.closed and process.returncode is not None


@NEEDS_VALKEY_SERVER_ON_PATH
def test_local_valkey_prefers_valkey_server_on_path_to_the_embedded_one() -> None:
    local = LocalValkey()
    local.stop()

    assert (local.binary, local.binary_source) == (shutil.which("valkey-server"), "PATH")


def test_local_valkey_without_valkey_server_on_path_runs_the_embedded_valkey_9(no_servers_on_path) -> None:
    with LocalValkey() as local:
        version = local.client().info("server")["valkey_version"]

        assert (local.binary, local.binary_source) == (embedded_server(), "embedded")
        assert version.startswith("9.") and local.version == version
        assert "(embedded)" in repr(local) and "running, pid" in repr(local)


def test_local_valkey_with_no_server_at_all_says_what_to_install(no_servers_on_path, monkeypatch) -> None:
    monkeypatch.setattr(server_module, "embedded_server", lambda: None)  # as without the 'embedded' extra

    with pytest.raises(FileNotFoundError, match=r"no valkey-server on PATH and no embedded Valkey.*\[embedded\]"):
        LocalValkey()


def test_local_cluster_is_made_with_cluster_commands_without_valkey_cli(no_servers_on_path) -> None:
    with LocalCluster(masters=2, replicas=1) as cluster:
        client = cluster.client()
        client.set("{a}key", "1")

        assert cluster.binary_source == "embedded" and "(embedded), 2 masters x 1 replicas" in repr(cluster)
        assert [cluster.role(node) for node in cluster.nodes] == ["master", "master", "slave", "slave"]
        assert cluster.replicas_of(cluster.master_of("{a}key")) and client.get("{a}key") == "1"
        client.close()


def test_glide_clients_of_the_local_server_and_cluster(server, client, cluster, cluster_client) -> None:
    """``glide_client()``: glide_sync, or (asyncio=True) an awaitable asyncio one; a cluster's is a cluster's."""
    import asyncio

    on_server = server.glide_client(request_timeout=3000)
    try:
        assert on_server.set("kit", "sync") == "OK" and client.get("kit") == "sync"
    finally:
        on_server.close()

    async def asyncio_client() -> bytes:
        glide_client = await server.glide_client(asyncio=True)
        try:
            return await glide_client.get("kit")  # type: ignore[no-any-return]
        finally:
            await glide_client.close()

    assert asyncio.run(asyncio_client()) == b"sync"
    on_cluster = cluster.glide_client()
    try:
        assert type(on_cluster).__name__ == "GlideClusterClient"
        on_cluster.set("{kit}a", "1")
        assert cluster_client.get("{kit}a") == "1"
    finally:
        on_cluster.close()
