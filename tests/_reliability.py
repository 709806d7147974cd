"""Checks shared by the reliability tests (faults, load, hostile input): what "consistent" means."""

from __future__ import annotations

from typing import Any

import valkey
from strands import Agent
from strands.types.content import Message

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel


def keyspace(client: valkey.Valkey) -> dict[Any, bytes]:
    """Every key on the server with its DUMP (type and value, byte for byte), to compare before/after."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def open_agent(
    client: valkey.Valkey, session_id: str, agent_id: str = "assistant", replies: Any = (), **kwargs: Any
) -> Agent:
    """An agent on ``ScriptedModel(replies)`` with a fresh manager: it restores ``agent_id`` as a new process would."""
    return Agent(
        agent_id=agent_id,
        model=ScriptedModel(replies),
        session_manager=ValkeySessionManager(session_id=session_id, client=client),
        callback_handler=None,
        **kwargs,
    )


def assert_index_consistent(client: valkey.Valkey, session_id: str, agent_id: str) -> list[int]:
    """The agent's id ZSET lists exactly 0..n-1, and exactly those ids have a message key; returns the ids."""
    agent_key = f"session:{session_id}:agent:{agent_id}"
    ids = [int(i) for i in client.zrange(f"{agent_key}:messages", 0, -1)]
    assert ids == list(range(len(ids))), f"holes or strays in the message ids: {ids}"
    prefix = f"{agent_key}:message:"
    stored = sorted(int(key.removeprefix(prefix)) for key in client.scan_iter(match=f"{prefix}*", count=1000))
    assert stored == ids, f"message keys {stored} differ from the index {ids}"
    return ids


def assert_valid_conversation(messages: list[Message]) -> None:
    """Each toolUse (but a trailing one) is answered by the next message, which holds exactly its toolResults."""
    for index, message in enumerate(messages):
        results = {block["toolResult"]["toolUseId"] for block in message["content"] if "toolResult" in block}
        previous = messages[index - 1]["content"] if index else []
        uses = {block["toolUse"]["toolUseId"] for block in previous if "toolUse" in block}
        assert results == uses, f"message {index}: toolResults {results} answer toolUses {uses}"
