"""TLS: a server that listens on TLS only serves the whole flow to a client that trusts its CA, and nothing else."""

from __future__ import annotations

import json

import pytest
import valkey
from cli_support import invoke

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.server import LocalValkey


def test_the_whole_flow_runs_over_tls(tls_server: LocalValkey, make_agent) -> None:
    client = valkey.Valkey(
        host="127.0.0.1",
        port=tls_server.port,
        ssl=True,
        ssl_ca_certs=str(tls_server.tls_files.ca),
        ssl_cert_reqs="required",
        decode_responses=True,
    )
    client.flushall()

    agent = make_agent(ValkeySessionManager("user-42", client), replies=["Hi Ada."])
    agent("My name is Ada.")
    restored = make_agent(ValkeySessionManager("user-42", client))
    ValkeySessionManager("user-42", client).delete_session("user-42")

    assert restored.messages == agent.messages and len(agent.messages) == 2
    assert client.keys("*") == []


def test_the_url_form_works_over_tls(tls_server: LocalValkey, make_agent) -> None:
    client = valkey.Valkey.from_url(tls_server.url, ssl_ca_certs=str(tls_server.tls_files.ca), decode_responses=True)

    make_agent(ValkeySessionManager("url-user", client))("hello")

    assert client.exists("session:url-user:agent:assistant:message:1") == 1


def test_a_plaintext_connection_is_refused(tls_server: LocalValkey) -> None:
    plain = valkey.Valkey(host="127.0.0.1", port=tls_server.port, socket_timeout=5, socket_connect_timeout=5)

    with pytest.raises(valkey.exceptions.ConnectionError):
        plain.ping()


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server: LocalValkey) -> None:
    untrusting = valkey.Valkey(host="127.0.0.1", port=tls_server.port, ssl=True, ssl_cert_reqs="required")

    with pytest.raises(valkey.exceptions.ConnectionError, match="certificate verify failed"):
        untrusting.ping()


def test_the_cli_reaches_a_tls_only_server_with_a_valkeys_url(tls_server: LocalValkey, make_agent) -> None:
    client = tls_server.client()
    client.flushall()
    make_agent(ValkeySessionManager("cli-user", client))("hello")
    url = f"{tls_server.url}?ssl_ca_certs={tls_server.tls_files.ca}"

    result = invoke("sessions", "--url", url, "--json")

    assert result.exit_code == 0, result.stderr
    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["cli-user"]


@pytest.mark.parametrize("scheme", ["valkeys", "rediss"])
def test_from_url_connects_over_tls(tls_server: LocalValkey, make_agent, scheme: str) -> None:
    url = tls_server.url.replace("valkeys", scheme)
    manager = ValkeySessionManager.from_url(url, f"tls-{scheme}", ssl_ca_certs=str(tls_server.tls_files.ca))

    make_agent(manager)("hello")

    check = tls_server.client()
    assert check.exists(f"session:tls-{scheme}:agent:assistant:message:1") == 1
    manager.close()
    check.close()
