"""Memory pressure: what a full server (maxmemory reached, no key it may evict) still does for sessions."""

from __future__ import annotations

import pytest
import valkey
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager


@pytest.fixture
def full(client: valkey.Valkey):
    """Fill the server to maxmemory under noeviction; restore the limits afterwards."""

    def fill() -> None:
        client.config_set("maxmemory", client.info("memory")["used_memory"] + 100_000)
        client.config_set("maxmemory-policy", "noeviction")
        with pytest.raises(valkey.exceptions.OutOfMemoryError):
            for n in range(10_000):
                client.set(f"filler:{n}", "x" * 1000)

    yield fill
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", "noeviction")


def test_a_full_server_still_restores_agents(client: valkey.Valkey, full, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", client, ttl=None), replies=["Hi."])
    agent("hello")
    full()

    restored = make_agent(ValkeySessionManager("user-42", client, ttl=None))

    assert restored.messages == agent.messages


def test_a_full_server_refuses_writes_with_a_session_exception_naming_memory(
    client: valkey.Valkey, full, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager("user-42", client, ttl=None))
    agent("hello")
    full()

    with pytest.raises(SessionException, match="maxmemory"):
        agent("one more")
