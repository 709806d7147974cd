"""An agent picks its conversation up anywhere, by session id: fresh clients, new processes, parity."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import valkey
from strands import Agent
from strands.agent.conversation_manager import SlidingWindowConversationManager
from strands.session.file_session_manager import FileSessionManager
from strands.types.session import SessionMessage

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def texts(agent: Agent) -> list[str]:
    return [block.get("text", "") for m in agent.messages for block in m["content"]]


def test_agent_resumes_from_a_fresh_client(server: LocalValkey, client: valkey.Valkey, make_agent) -> None:
    first = make_agent(ValkeySessionManager(session_id="user-42", client=client))
    first("one")
    first("two")

    fresh = server.client(decode_responses=False)
    resumed = make_agent(ValkeySessionManager(session_id="user-42", client=fresh))

    assert resumed.messages == first.messages
    resumed("three")
    assert len(resumed.messages) == 6
    assert client.zcard("session:user-42:agent:assistant:messages") == 6


def test_agent_resumes_in_another_process(server: LocalValkey, client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="user-42", client=client), replies=["first answer"])("first question")
    code = textwrap.dedent(f"""
        import valkey
        from strands import Agent
        from strands_valkey_session_manager import ValkeySessionManager
        from strands_valkey_session_manager.testing.model import ScriptedModel
        client = valkey.Valkey(port={server.port}, decode_responses=True)
        agent = Agent(agent_id="assistant", model=ScriptedModel(["second answer"]), callback_handler=None,
                      session_manager=ValkeySessionManager(session_id="user-42", client=client))
        print(len(agent.messages))
        agent("second question")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"

    again = make_agent(ValkeySessionManager(session_id="user-42", client=client))
    assert texts(again) == ["first question", "first answer", "second question", "second answer"]


def test_agent_state_is_restored(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client))
    agent.state.set("user", {"name": "Ada", "tier": 3})
    agent("hi")
    assert make_agent(ValkeySessionManager(session_id="s", client=client)).state.get("user") == {
        "name": "Ada",
        "tier": 3,
    }


def test_sliding_window_restores_the_same_messages_as_file_session_manager(
    client: valkey.Valkey, make_agent, tmp_path
) -> None:
    def converse(manager_factory) -> Agent:
        agent = make_agent(manager_factory(), conversation_manager=SlidingWindowConversationManager(window_size=4))
        for turn in range(5):
            agent(f"turn {turn}")
        return make_agent(manager_factory(), conversation_manager=SlidingWindowConversationManager(window_size=4))

    from_valkey = converse(lambda: ValkeySessionManager(session_id="s", client=client))
    from_file = converse(lambda: FileSessionManager(session_id="s", storage_dir=str(tmp_path)))

    assert texts(from_valkey) == texts(from_file)
    assert from_valkey.conversation_manager.removed_message_count == 6
    assert (
        from_valkey.conversation_manager.removed_message_count == from_file.conversation_manager.removed_message_count
    )


def test_image_bytes_round_trip_through_an_agent(client: valkey.Valkey, make_agent) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    agent = make_agent(ValkeySessionManager(session_id="s", client=client))
    agent([{"text": "what is this?"}, {"image": {"format": "png", "source": {"bytes": png}}}])

    restored = make_agent(ValkeySessionManager(session_id="s", client=client))
    assert restored.messages[0]["content"][1]["image"]["source"]["bytes"] == png


def test_restored_agent_continues_message_ids_without_a_gap(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager(session_id="s", client=client))("one")
    make_agent(ValkeySessionManager(session_id="s", client=client))("two")
    assert client.zrange("session:s:agent:assistant:messages", 0, -1) == ["0", "1", "2", "3"]


def test_redaction_rewrites_the_latest_message_keeping_created_at(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    agent = make_agent(manager)
    agent("my card is 4111")
    before = manager.read_message("s", "assistant", 1)

    manager.redact_latest_message({"role": "assistant", "content": [{"text": "[redacted]"}]}, agent)

    after = manager.read_message("s", "assistant", 1)
    assert after.created_at == before.created_at
    assert after.to_message()["content"] == [{"text": "[redacted]"}]
    restored = make_agent(ValkeySessionManager(session_id="s", client=client))
    assert restored.messages[1]["content"] == [{"text": "[redacted]"}]


def test_tool_use_and_results_are_restored(client: valkey.Valkey) -> None:
    from strands import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    agent = Agent(
        agent_id="calc",
        model=ScriptedModel([{"tool": "add", "input": {"a": 2, "b": 3}}, "5"]),
        tools=[add],
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="s", client=client),
    )
    agent("2+3?")
    restored = Agent(
        agent_id="calc",
        model=ScriptedModel(),
        tools=[add],
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="s", client=client),
    )
    assert restored.messages == agent.messages
    assert restored.messages[2]["content"][0]["toolResult"]["content"][0]["text"] == "5"


def test_stored_message_is_a_session_message(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    make_agent(manager)("hi")
    assert isinstance(manager.read_message("s", "assistant", 0), SessionMessage)
