"""The SDK's held-record bookkeeping, pruned lazily here: bounded, and pruned before a redaction uses it."""

from __future__ import annotations

import json

import valkey
from strands.agent.conversation_manager import SlidingWindowConversationManager

from strands_valkey_session_manager import ValkeySessionManager


def test_held_records_stay_bounded_when_a_sliding_window_drops_messages(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    agent = make_agent(manager, conversation_manager=SlidingWindowConversationManager(window_size=4))

    for turn in range(60):
        agent(f"turn {turn}")

    assert len(manager._held_records["assistant"]) <= 2 * len(agent.messages) + 16


def test_held_records_of_messages_the_window_dropped_are_pruned_before_a_redaction(
    client: valkey.Valkey, make_agent
) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    agent = make_agent(manager, conversation_manager=SlidingWindowConversationManager(window_size=4))
    for turn in range(10):
        agent(f"turn {turn}")

    manager.redact_latest_message({"role": "assistant", "content": [{"text": "[redacted]"}]}, agent)

    held = {id(record.message) for record in manager._held_records["assistant"]}
    assert held <= {id(message) for message in agent.messages}


def test_redact_latest_message_rewrites_the_stored_latest_message(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    agent = make_agent(manager, replies=["the secret is 42"])
    agent("tell me the secret")
    redacted = {"role": "assistant", "content": [{"text": "[redacted]"}]}

    manager.redact_latest_message(redacted, agent)

    stored = json.loads(client.get("session:user-42:agent:assistant:message:1"))
    assert stored["redact_message"] == redacted
    assert stored["message"]["content"] == [{"text": "the secret is 42"}]
