"""Memory pressure: what a full server (maxmemory reached, no key it may evict) still does for sessions."""

from __future__ import annotations

import pytest
import valkey
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager


@pytest.fixture
def full(client: valkey.Valkey):
    """Put the server over its maxmemory under noeviction, for good; restore the limits afterwards.

    Filling it up to a limit just above its usage was not enough: the server's own usage moves (buffers
    freed after the filler's last write), so a later write could fit, and which one was refused varied.
    A limit far below what is used refuses every write, whatever moves.
    """

    def fill() -> None:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        with pytest.raises(valkey.exceptions.OutOfMemoryError):
            client.set("filler", "x")

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

    with pytest.raises(SessionException, match="maxmemory"):  # the prompt's append: nothing of the turn is written
        agent("one more")
    assert len(ValkeySessionManager("user-42", client, ttl=None).list_messages("user-42", "assistant")) == 2
