"""Connecting: ``from_url`` builds the client (timeouts, retries, TLS, cluster); what is no client is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import valkey
import valkey.asyncio
from helpers import wait_until
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.connection import client_from_url
from strands_valkey_session_manager.testing.server import LocalValkey, free_port

SNAPSHOT = "session/user-42/scopes/agent/assistant/snapshots/snapshot_latest.json"


def names_connected(client: valkey.Valkey) -> list[str]:
    return [entry["name"] for entry in client.client_list()]


# -- ValkeySessionManager.from_url ------------------------------------------------------------------


def test_from_url_builds_a_client_with_timeouts_and_bytes_replies(server: LocalValkey, client) -> None:
    manager = ValkeySessionManager.from_url(server.url, "user-42", ttl=60)

    settings = manager.client.connection_pool.connection_kwargs
    assert (settings["socket_timeout"], settings["socket_connect_timeout"]) == (5, 2)
    assert settings["decode_responses"] is False
    assert 55_000 <= client.pttl("session:user-42") <= 60_000
    manager.close()


def test_from_url_runs_an_agent_that_a_manager_on_any_client_restores(server: LocalValkey, client, make_agent) -> None:
    manager = ValkeySessionManager.from_url(server.url, "user-42")
    agent = make_agent(manager, replies=["Hi Ada."])
    agent("My name is Ada.")
    manager.close()

    restored = make_agent(ValkeySessionManager("user-42", client))

    assert restored.messages == agent.messages and len(agent.messages) == 2


def test_client_settings_passed_by_name_replace_the_defaults(server: LocalValkey, client) -> None:
    manager = ValkeySessionManager.from_url(server.url, "user-42", socket_timeout=9, client_name="from-url-test")

    assert manager.client.connection_pool.connection_kwargs["socket_timeout"] == 9
    assert "from-url-test" in names_connected(client)
    manager.close()


def test_close_disconnects_the_client_from_url_built(server: LocalValkey, client) -> None:
    manager = ValkeySessionManager.from_url(server.url, "user-42", client_name="owned")
    assert "owned" in names_connected(client)

    manager.close()

    wait_until(lambda: "owned" not in names_connected(client), what="the built client to disconnect")


def test_close_leaves_a_client_passed_in_open(server: LocalValkey, client) -> None:
    mine = server.client(client_name="mine")
    ValkeySessionManager("user-42", mine).close()

    assert mine.ping() and "mine" in names_connected(client)
    mine.close()


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"ttll": 60}, "unknown option 'ttll'. Did you mean 'ttl'?"),
        ({"ttl_seconds": 60}, "unknown option 'ttl_seconds'. Did you mean 'ttl'?"),
        ({"sockettimeout": 1}, "unknown option 'sockettimeout'. Did you mean 'socket_timeout'?"),
        ({"read_from_replicas": True}, "It is a setting of valkey.cluster.ValkeyCluster: pass cluster=True"),
    ],
)
def test_an_unknown_option_is_a_type_error_naming_it_and_nothing_is_written(server, client, options, says) -> None:
    with pytest.raises(TypeError) as raised:
        ValkeySessionManager.from_url(server.url, "user-42", **options)

    assert says in str(raised.value)
    assert client.exists("session:user-42") == 0


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"ttl_seconds": 60}, "unknown option 'ttl_seconds'. Did you mean 'ttl'? It takes the options ttl, key_prefix"),
        ({"lock_timeout_s": 5}, "unknown option 'lock_timeout_s'. Did you mean 'lock_timeout'?"),
        ({"key_prefx": "tenant"}, "unknown option 'key_prefx'. Did you mean 'key_prefix'?"),
        ({"user": "ada"}, "unknown option 'user'. It takes the options ttl, key_prefix"),  # no close name
    ],
)
def test_the_constructor_refuses_an_unknown_option_naming_the_closest_and_writes_nothing(client, options, says) -> None:
    with pytest.raises(TypeError) as raised:
        ValkeySessionManager("user-42", client, **options)

    assert says in str(raised.value)
    assert client.exists("session:user-42") == 0


def test_a_tls_setting_on_a_plaintext_url_fails_at_from_url_not_at_first_use(server: LocalValkey) -> None:
    with pytest.raises(TypeError, match="TLS settings .* need a valkeys:// or rediss:// URL"):
        ValkeySessionManager.from_url(server.url, "user-42", ssl_ca_certs="/etc/ca.pem")


def test_a_url_that_is_not_a_valkey_url_is_a_value_error(server: LocalValkey) -> None:
    with pytest.raises(ValueError, match="schemes"):
        ValkeySessionManager.from_url(f"http://127.0.0.1:{server.port}", "user-42")


def test_a_client_given_as_the_url_is_a_type_error_saying_to_pass_it_to_the_constructor(client) -> None:
    with pytest.raises(TypeError, match="takes a URL string .* a client you already have goes to the constructor"):
        ValkeySessionManager.from_url(client, "user-42")  # type: ignore[arg-type]


def test_redis_urls_work_too(server: LocalValkey, client) -> None:
    ValkeySessionManager.from_url(f"redis://127.0.0.1:{server.port}/0", "user-42").close()

    assert client.exists("session:user-42") == 1


def test_from_url_with_cluster_true_keeps_a_session_in_one_slot(cluster, cluster_client, make_agent) -> None:
    manager = ValkeySessionManager.from_url(cluster.url, "user-42", cluster=True)
    make_agent(manager)("hello")

    assert isinstance(manager.client, ValkeyCluster)
    assert cluster_client.exists("session:{user-42}:agent:assistant:message:1") == 1
    manager.close()


def test_cluster_true_against_a_standalone_server_says_to_leave_it_out(server: LocalValkey) -> None:
    with pytest.raises(SessionException, match="not a cluster: leave out cluster=True"):
        ValkeySessionManager.from_url(server.url, "user-42", cluster=True)


def test_an_unreachable_url_is_a_session_exception_naming_the_cause() -> None:
    with pytest.raises(SessionException, match="Connection refused") as raised:
        ValkeySessionManager.from_url(f"valkey://127.0.0.1:{free_port()}", "user-42")

    assert isinstance(raised.value.__cause__, valkey.exceptions.ConnectionError)


# -- what is no usable client ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        lambda server: server.url,
        lambda server: valkey.ConnectionPool.from_url(server.url),
        lambda server: object(),
    ],
    ids=["url", "pool", "object"],
)
def test_the_manager_refuses_what_is_no_sync_client_saying_what_to_pass(
    server, client, given: Callable[[LocalValkey], Any]
) -> None:
    value = given(server)
    with pytest.raises(TypeError) as raised:
        ValkeySessionManager("user-42", value)

    message = str(raised.value)
    assert f"client=<{type(value).__module__}.{type(value).__qualname__}>" in message
    assert "pass a synchronous client: valkey.Valkey(...)" in message and "from_url(url" in message
    assert client.exists("session:user-42") == 0


def test_from_url_builds_an_asyncio_client_when_asked(server: LocalValkey, client, recwarn) -> None:
    manager = ValkeySessionManager.from_url(server.url, "user-42", asyncio=True)

    assert isinstance(manager.client, valkey.asyncio.Valkey) and client.exists("session:user-42") == 1
    manager.close()
    assert not [warning for warning in recwarn if "never awaited" in str(warning.message)]


def test_an_asyncio_client_opens_the_session_with_no_coroutine_left_unawaited(
    server: LocalValkey, client, recwarn
) -> None:
    manager = ValkeySessionManager("user-42", valkey.asyncio.Valkey.from_url(server.url))

    assert client.exists("session:user-42") == 1
    manager.close()
    assert not [warning for warning in recwarn if "never awaited" in str(warning.message)]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (lambda server: server.url, "a string"),
        (lambda server: valkey.asyncio.ConnectionPool.from_url(server.url), "valkey.asyncio.Valkey(connection_pool="),
        (lambda server: server.client(), "a synchronous client"),
    ],
    ids=["url", "pool", "sync-client"],
)
def test_the_storage_refuses_what_is_no_asyncio_client_saying_what_to_pass(
    server, given: Callable[[LocalValkey], Any], says: str
) -> None:
    with pytest.raises(TypeError) as raised:
        ValkeyStorage(given(server))

    assert says in str(raised.value)
    assert "pass an asyncio client: valkey.asyncio.Valkey(...)" in str(raised.value)
    assert "ValkeyStorage.from_url(url" in str(raised.value)


# -- ValkeyStorage.from_url --------------------------------------------------------------------------


def test_storage_from_url_stores_with_its_own_options(server: LocalValkey, client) -> None:
    storage = ValkeyStorage.from_url(server.url, ttl=60, key_prefix="snap")

    asyncio.run(storage.write(SNAPSHOT, b"state"))

    assert asyncio.run(storage.read(SNAPSHOT)) == b"state"
    assert 55_000 <= client.pttl(f"snap:{SNAPSHOT}") <= 60_000
    storage.close()


def test_storage_from_url_refuses_an_unknown_option(server: LocalValkey) -> None:
    with pytest.raises(TypeError, match="unknown option 'key_prefx'. Did you mean 'key_prefix'?"):
        ValkeyStorage.from_url(server.url, key_prefx="snap")


def test_storage_from_url_on_a_cluster_keeps_a_group_in_one_slot(cluster, cluster_client) -> None:
    storage = ValkeyStorage.from_url(cluster.url, cluster=True)

    asyncio.run(storage.write(SNAPSHOT, b"state"))

    assert cluster_client.exists(f"strands:{{session/user-42}}/{SNAPSHOT.split('/', 2)[2]}") == 1
    storage.close()


# -- a client to share: connection.client_from_url ---------------------------------------------------


def test_client_from_url_gives_a_client_to_share_with_the_same_defaults(server: LocalValkey, client) -> None:
    shared = client_from_url(server.url, client_name="shared")
    managers = [ValkeySessionManager(f"user-{number}", shared) for number in range(3)]

    assert shared.connection_pool.connection_kwargs["socket_timeout"] == 5
    assert client.exists(*(manager.keys.session(manager.session_id) for manager in managers)) == 3
    assert names_connected(client).count("shared") == 1
    shared.close()


def test_client_from_url_refuses_a_setting_no_client_takes(server: LocalValkey) -> None:
    with pytest.raises(TypeError, match=r"client_from_url\(\) got an unknown option 'ttl'. It takes the settings"):
        client_from_url(server.url, ttl=60)
