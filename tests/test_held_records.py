"""The SDK's held-record bookkeeping: pruned lazily here, with exactly the SDK's outcome for a redaction.

1.62's ``RepositorySessionManager`` prunes its held records on every sync (a walk of every message); the
manager notes the syncs instead and settles the records when a redaction needs them (held_records.py).
"""

from __future__ import annotations

import copy
import json
import types
from typing import Any

import pytest
import valkey
from hypothesis import given, settings
from hypothesis import strategies as st
from strands import Agent
from strands.agent.conversation_manager import SlidingWindowConversationManager
from strands.session.file_session_manager import FileSessionManager
from strands.session.repository_session_manager import RepositorySessionManager
from strands.types.session import SessionMessage

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.held_records import HeldRecords
from strands_valkey_session_manager.testing.model import ScriptedModel

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


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


def redact_an_aliased_message_outside_the_agent(manager: RepositorySessionManager) -> list[str]:
    """Two held records of one message that is not in agent.messages, redacted in place; the restored texts."""
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    agent("hello")
    secret = {"role": "user", "content": [{"text": "secret"}]}
    manager.append_message(secret, agent)
    manager.append_message(secret, agent)  # a retried write of the same message: two records, one dict
    secret["content"] = [{"text": "[redacted]"}]  # the SDK's guardrails redact the message in place
    manager.redact_latest_message(secret, agent)
    stored = manager.session_repository.list_messages(manager.session_id, "assistant")
    return [record.to_message()["content"][0]["text"] for record in stored]


def test_a_direct_redaction_rewrites_every_held_alias_as_file_session_manager_does(
    client: valkey.Valkey, tmp_path
) -> None:
    ours = redact_an_aliased_message_outside_the_agent(ValkeySessionManager(session_id="s", client=client))
    reference = redact_an_aliased_message_outside_the_agent(
        FileSessionManager(session_id="s", storage_dir=str(tmp_path))
    )

    assert reference[-2:] == ["[redacted]", "[redacted]"]
    assert ours == reference


# -- against the SDK's own pruning, on generated histories -----------------------------------------------

OPERATIONS = st.lists(
    st.sampled_from(
        ["append", "append untracked", "alias", "foreign", "drop", "continue", "readd", "backfill", "sync", "redact"]
    ),
    max_size=60,
)


class Twin:
    """An SDK manager's held-record state only: what RepositorySessionManager's methods read and write."""

    def __init__(self) -> None:
        self._held_records: dict[str, list[SessionMessage]] = {"a": []}


@settings(max_examples=300, deadline=None)
@given(operations=OPERATIONS, seed=st.randoms(use_true_random=False))
def test_the_records_held_at_a_redaction_are_the_sdks_on_any_history(operations: list[str], seed: Any) -> None:
    ours, sdk = Twin(), Twin()  # ours: synced lazily by HeldRecords; sdk: pruned on every sync by the SDK
    held = HeldRecords(ours)  # type: ignore[arg-type]
    agent = types.SimpleNamespace(agent_id="a", messages=[])
    dropped: list[dict[str, Any]] = []
    count = 0

    def record(message: dict[str, Any]) -> None:
        entry = SessionMessage.from_message(message, len(sdk._held_records["a"]))  # type: ignore[arg-type]
        ours._held_records["a"].append(entry)
        sdk._held_records["a"].append(entry)

    for operation in operations:
        count += 1
        messages = agent.messages
        if operation in ("append", "append untracked"):
            message: dict[str, Any] = {"role": "user", "content": [{"text": str(count)}]}
            if operation == "append":
                message["tracking_id"] = f"t{count}"
            messages.append(message)
            record(message)
        elif operation == "alias" and messages:
            record(seed.choice(messages))
        elif operation == "foreign":
            record({"role": "user", "content": [], "tracking_id": f"f{count}"})
        elif operation == "drop" and messages:
            cut = seed.randint(1, len(messages))
            dropped += messages[:cut]
            agent.messages = messages[cut:]
        elif operation == "continue" and messages:
            messages[-1] = copy.copy(messages[-1])  # the SDK's continuation: a copy with the same tracking id
        elif operation == "readd" and dropped:
            messages.append(seed.choice(dropped))
        elif operation == "backfill":
            for index, message in enumerate(messages):  # as the SDK does at an invocation's start: fresh ids
                message.setdefault("tracking_id", f"b{count}-{index}")
        elif operation == "sync":
            held.synced(agent)  # type: ignore[arg-type]
            RepositorySessionManager._prune_held_records(sdk, agent)  # type: ignore[arg-type]
        elif operation == "redact":
            held.before_redaction("a")
            assert [id(r) for r in ours._held_records["a"]] == [id(r) for r in sdk._held_records["a"]]
            if sdk._held_records["a"]:
                sdk._held_records["a"][-1].redact_message = {"role": "user", "content": [{"text": "[redacted]"}]}
    held.before_redaction("a")
    assert [id(r) for r in ours._held_records["a"]] == [id(r) for r in sdk._held_records["a"]]
