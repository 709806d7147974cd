"""BidiAgent (bidirectional streaming: voice agents) keeps its session like Agent does, with the sync client.

A real ``BidiAgent`` on the testing kit's stand-in ``ScriptedBidiModel`` (no network, no audio), as the SDK's
own tests use a stand-in ``BidiModel``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import valkey
from helpers import wait_until
from strands.bidi import BidiAgent

from strands_valkey_session_manager import SessionBusyError, ValkeySessionManager, invocation
from strands_valkey_session_manager.testing.model import ScriptedBidiModel

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def voice_agent(manager: ValkeySessionManager, replies: Any = ()) -> BidiAgent:
    return BidiAgent(model=ScriptedBidiModel(replies), session_manager=manager, agent_id="voice")


async def converse(agent: BidiAgent, *said: str) -> None:
    """Start, say each line and wait for its whole reply, stop."""
    await agent.start()
    try:
        for text in said:
            await agent.send(text)
            async for event in agent.receive():
                if event.get("type") == "bidi_response_stop":
                    break
    finally:
        await agent.stop()


def texts(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m["role"], "".join(block.get("text", "") for block in m["content"])) for m in messages]


def test_a_bidi_agent_is_built_on_the_session_manager(client: valkey.Valkey) -> None:
    agent = voice_agent(ValkeySessionManager("call-1", client))

    assert agent.messages == []
    assert client.exists("session:call-1", "session:call-1:agent:voice") == 2


def test_a_voice_conversation_is_stored_with_its_replies_and_restored_by_a_new_agent(client: valkey.Valkey) -> None:
    agent = voice_agent(ValkeySessionManager("call-1", client), replies=["Hello, caller.", "Goodbye."])
    asyncio.run(converse(agent, "hi", "bye"))

    restored = voice_agent(ValkeySessionManager("call-1", client))

    expected = [("user", "hi"), ("assistant", "Hello, caller."), ("user", "bye"), ("assistant", "Goodbye.")]
    assert texts(agent.messages) == expected
    assert texts(restored.messages) == expected  # the replies as streamed, not the empty pending blocks


def test_deleting_a_voice_session_removes_every_key(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager("call-1", client)
    asyncio.run(converse(voice_agent(manager, replies=["ok"]), "hi"))

    manager.delete_session("call-1")

    assert client.keys("*") == []


def test_a_running_voice_session_is_kept_alive_from_start_to_stop(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager("call-1", client, ttl=1)
    agent = voice_agent(manager, replies=["still here"])

    async def long_call() -> None:
        await agent.start()
        try:
            # Silence on the line for longer than the ttl: the session must not expire under the call.
            deadline = client.pexpiretime("session:call-1")
            await asyncio.to_thread(
                wait_until, lambda: client.pexpiretime("session:call-1") > deadline + 1000, 10, "a keep-alive"
            )
            assert invocation.scheduled() == 1
            await agent.send("are you there?")
            async for event in agent.receive():
                if event.get("type") == "bidi_response_stop":
                    break
        finally:
            await agent.stop()

    asyncio.run(long_call())

    assert invocation.scheduled() == 0  # the beats stopped with the call
    assert texts(voice_agent(ValkeySessionManager("call-1", client, ttl=1)).messages)[-1] == ("assistant", "still here")


def test_with_the_lock_a_second_call_on_the_same_agent_is_refused_while_the_first_runs(client: valkey.Valkey) -> None:
    first = voice_agent(ValkeySessionManager("call-1", client, lock_timeout=0))
    second = voice_agent(ValkeySessionManager("call-1", client, lock_timeout=0))

    async def both() -> None:
        await first.start()
        try:
            try:
                await second.start()
            except SessionBusyError:
                return
            await second.stop()
            raise AssertionError("the second call started while the first held the lock")
        finally:
            await first.stop()

    asyncio.run(both())
    asyncio.run(converse(second, "now?"))  # released at stop: the next call takes it
