"""The tutorial (../shared/SEED.md), example by example, with agent_ids as our docs give them."""

from __future__ import annotations

import json

import valkey
from strands import Agent

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel


def test_two_agents_share_one_session_each_with_its_own_keys(client: valkey.Valkey) -> None:
    researcher = Agent(
        agent_id="researcher",
        system_prompt="You are a research agent.",
        model=ScriptedModel(["Valkey is fast."]),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="workflow-001", client=client),
    )
    writer = Agent(
        agent_id="writer",
        system_prompt="You are a writing agent.",
        model=ScriptedModel(["Meet Valkey."]),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="workflow-001", client=client),
    )

    researcher("Research the key benefits of Valkey for AI workloads.")
    writer("Write a short blog intro about Valkey for AI.")

    for agent_id, texts in {
        "researcher": ["Research the key benefits of Valkey for AI workloads.", "Valkey is fast."],
        "writer": ["Write a short blog intro about Valkey for AI.", "Meet Valkey."],
    }.items():
        stored = [
            json.loads(client.get(f"session:workflow-001:agent:{agent_id}:message:{i}"))["message"]["content"][0][
                "text"
            ]
            for i in range(2)
        ]
        assert stored == texts
    assert client.exists("session:workflow-001:agent:researcher", "session:workflow-001:agent:writer") == 2


def test_delete_session_on_logout_removes_every_key(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="user-42", client=client))("hi")
    assert client.keys("session:user-42*")

    sm = ValkeySessionManager(session_id="user-42", client=client)
    sm.delete_session("user-42")

    assert client.keys("*") == []


def test_raw_keys_listing_shows_every_key_with_a_ttl_near_an_hour(client: valkey.Valkey) -> None:
    agent = Agent(
        model=ScriptedModel(),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="user-42", client=client),
    )
    agent("hello")

    keys = client.keys("session:user-42*")
    listing = {k: client.ttl(k) for k in sorted(keys)}

    assert "session:user-42" in listing
    assert "session:user-42:agent:default" in listing
    assert "session:user-42:agent:default:message:0" in listing
    assert "session:user-42:agent:default:message:1" in listing
    assert all(3590 <= ttl <= 3600 for ttl in listing.values()), listing
