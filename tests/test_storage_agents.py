"""The SDK's storage consumers on ValkeyStorage, end to end: snapshot sessions, checkpoints, offloader, stash."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import valkey
from helpers import fails_first_time, two_node_graph
from strands import Agent, tool
from strands.multiagent import Swarm
from strands.session import SnapshotSessionManager
from strands.storage import InMemoryStorage
from strands.storage.storage import Storage
from strands.vended_plugins.context_offloader import ContextOffloader

from strands_valkey_session_manager.testing.model import ScriptedModel

LATEST = "session/user-42/scopes/agent/assistant/snapshots/snapshot_latest.json"


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def texts(agent: Agent) -> list[str]:
    return [block.get("text", "") for message in agent.messages for block in message["content"]]


def snapshot_agent(session_storage: Storage | None, replies: Any = (), **kwargs: Any) -> Agent:
    """An agent of session ``user-42``; ``kwargs`` go to the manager (trigger, save_latest_on) or the Agent."""
    manager_options = {key: kwargs.pop(key) for key in ("snapshot_trigger", "save_latest_on") if key in kwargs}
    model = ScriptedModel(replies)
    model.update_config(context_window_limit=200_000)
    return Agent(
        agent_id="assistant",
        model=model,
        session_manager=SnapshotSessionManager("user-42", storage=session_storage, **manager_options),
        callback_handler=None,
        **kwargs,
    )


def test_a_synchronous_agent_is_persisted_and_restored(make_storage) -> None:
    storage = make_storage(ttl=3600)
    first = snapshot_agent(storage, ["hello back", "still here"])
    first("hello")
    first("are you there?")

    restored = snapshot_agent(make_storage())

    assert texts(restored) == ["hello", "hello back", "are you there?", "still here"]
    assert json.loads(run(storage.read(LATEST)))["scope"] == "agent"


def test_an_async_and_a_streaming_agent_are_persisted_and_restored(make_storage) -> None:
    storage = make_storage()

    async def conversation() -> None:
        agent = snapshot_agent(storage, ["one back", "two back"])
        await agent.invoke_async("one")
        async for _ in agent.stream_async("two"):
            pass

    asyncio.run(conversation())

    assert texts(snapshot_agent(storage)) == ["one", "one back", "two", "two back"]


def test_per_message_saves_from_hooks_reach_valkey(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    snapshot_agent(storage, ["reply"], save_latest_on="message")("question")

    assert texts(snapshot_agent(storage)) == ["question", "reply"]


def test_checkpoints_list_in_order_and_restore_each_state(make_storage) -> None:
    storage = make_storage()
    agent = snapshot_agent(storage, ["r1", "r2", "r3"], snapshot_trigger=lambda agent_data, **_: True)
    for turn in ("t1", "t2", "t3"):
        agent(turn)
    manager: SnapshotSessionManager = agent._session_manager  # type: ignore[assignment]
    forced = run(manager.save_snapshot(agent, is_latest=False))

    ids = run(manager.list_snapshot_ids(agent))
    assert len(ids) == 4 and ids == sorted(ids) and ids[-1] == forced
    assert run(manager.list_snapshot_ids(agent, start_after=ids[0], limit=2)) == ids[1:3]
    for count, snapshot_id in zip((2, 4, 6, 6), ids, strict=True):
        assert run(manager.restore_snapshot(agent, snapshot_id=snapshot_id))
        assert len(agent.messages) == count
    assert texts(agent) == ["t1", "r1", "t2", "r2", "t3", "r3"]


def test_delete_session_leaves_no_key_behind(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=3600)
    trigger = lambda agent_data, **_: True  # noqa: E731
    agent = snapshot_agent(storage, ["a", "b"], snapshot_trigger=trigger, storage=storage, context_manager="auto")
    agent("one")
    agent("two")
    assert run(storage.list("context/user-42/"))  # the stash kept the messages too
    assert client.dbsize() > 0

    run(agent._session_manager.delete_session())  # type: ignore[union-attr]

    assert client.keys("*") == []
    assert snapshot_agent(storage).messages == []


def test_agent_storage_is_used_by_a_snapshot_manager_given_none(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    agent = snapshot_agent(None, ["reply"], storage=storage)
    agent("question")

    assert run(storage.list("session/")) == [LATEST]
    assert texts(snapshot_agent(None, storage=storage)) == ["question", "reply"]


def test_agent_storage_is_used_by_the_context_offloader(make_storage) -> None:
    storage = make_storage()
    report = "\n".join(f"line {number}: the measurement was {number * 7}" for number in range(400))

    @tool
    def measurements() -> str:
        """Return the full measurement report."""
        return report

    retrieved: list[str] = []

    def model(messages: Any) -> Any:
        results = [b["toolResult"] for m in messages for b in m["content"] if "toolResult" in b]
        if not results:
            return {"tool": "measurements", "input": {}}
        if len(results) == 1:
            return {"tool": "retrieve_offloaded_content", "input": {"reference": "tooluse_1_0"}}
        retrieved.append(results[-1]["content"][0]["text"])
        return "done"

    agent = Agent(
        model=ScriptedModel(model),
        tools=[measurements],
        plugins=[ContextOffloader(max_result_tokens=200, preview_tokens=50)],
        storage=storage,
        callback_handler=None,
    )
    agent("get the report")

    assert run(storage.list("offloader/")) == ["offloader/tooluse_1_0"]
    assert report not in str(agent.messages[2])  # the tool result in context is only a preview
    assert retrieved == [report]  # read back from Valkey by the retrieval tool
    assert report.encode() in run(storage.read("offloader/tooluse_1_0"))


def test_agent_storage_is_used_by_the_context_manager_stash(make_storage) -> None:
    storage = make_storage()
    agent = snapshot_agent(None, ["reply"], storage=storage, context_manager="auto")
    agent("question")

    stashed = run(storage.list("context/user-42/scopes/agent/assistant/"))
    assert stashed
    assert any(b"question" in run(storage.read(key)) for key in stashed)


# -- Graph and Swarm --------------------------------------------------------------------------------------------------


def graph(storage: Storage, model_a: ScriptedModel, model_b: ScriptedModel) -> Any:
    return two_node_graph(SnapshotSessionManager("g", storage=storage), model_a, model_b)


def interrupted_graph_resumed(storage: Storage) -> tuple[Any, ...]:
    """Run A then B (which fails once), then a new Graph on the same session; what ran and what is stored."""
    model_b = ScriptedModel(fails_first_time("B done"))
    try:
        graph(storage, ScriptedModel(["A done"]), model_b)("task")
    except RuntimeError:
        pass
    model_a_again = ScriptedModel(["A again"])
    result = graph(storage, model_a_again, model_b)("task")
    keys = run(storage.list("session/g/"))
    return str(result.status), [node.node_id for node in result.execution_order], model_a_again.calls, keys


def test_a_graph_resumes_from_its_last_completed_node_as_in_memory(make_storage) -> None:
    on_valkey = interrupted_graph_resumed(make_storage())

    assert on_valkey == interrupted_graph_resumed(InMemoryStorage())
    assert on_valkey[2] == 0  # A completed before the failure: not run again
    assert on_valkey[3] == ["session/g/scopes/multiAgent/default_graph/snapshots/snapshot_latest.json"]


def interrupted_swarm_resumed(storage: Storage) -> tuple[Any, ...]:
    model = ScriptedModel(fails_first_time("alpha done"))

    def swarm() -> Swarm:
        agent = Agent(name="alpha", agent_id="alpha", model=model, callback_handler=None)
        return Swarm([agent], session_manager=SnapshotSessionManager("sw", storage=storage))

    try:
        swarm()("go")
    except RuntimeError:
        pass
    result = swarm()("go")
    stored = json.loads(run(storage.read("session/sw/scopes/multiAgent/default_swarm/snapshots/snapshot_latest.json")))
    return str(result.status), [node.node_id for node in result.node_history], model.calls, sorted(stored)


def test_a_swarm_is_persisted_and_resumes_as_in_memory(make_storage) -> None:
    on_valkey = interrupted_swarm_resumed(make_storage())

    assert on_valkey == interrupted_swarm_resumed(InMemoryStorage())
    assert on_valkey[0] == "Status.COMPLETED"


# -- parity -----------------------------------------------------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def agent_scenario(storage: Storage) -> tuple[Any, ...]:
    """Two agents and a checkpointed history in one session: what is listed and what each restore gives."""
    trigger = lambda agent_data, **_: len(agent_data.messages) % 4 == 2  # noqa: E731
    first = snapshot_agent(
        storage, ["r1", "r2", "r3"], snapshot_trigger=trigger, storage=storage, context_manager="auto"
    )
    for turn in ("t1", "t2", "t3"):
        first(turn)
    other = Agent(
        agent_id="other",
        model=ScriptedModel(["o1"]),
        session_manager=SnapshotSessionManager("user-42", storage=storage),
        callback_handler=None,
    )
    other("hi other")
    manager: SnapshotSessionManager = first._session_manager  # type: ignore[assignment]
    ids = run(manager.list_snapshot_ids(first))
    restores = []
    for snapshot_id in ids:
        run(manager.restore_snapshot(first, snapshot_id=snapshot_id))
        restores.append([(message["role"], message["content"]) for message in first.messages])  # no tracking ids
    listed = [UUID.sub("<id>", key) for key in run(storage.list(""))]
    stash_count = len([key for key in listed if key.startswith("context/")])
    again = snapshot_agent(storage, storage=storage, context_manager="auto")
    return [key for key in listed if not key.startswith("context/")], stash_count, restores, texts(again)


def test_the_same_agent_scenario_lists_and_restores_the_same_as_in_memory(make_storage) -> None:
    on_valkey = agent_scenario(make_storage(ttl=3600))

    assert on_valkey == agent_scenario(InMemoryStorage())
    assert len(on_valkey[2]) == 2  # two checkpoints
    assert on_valkey[3] == ["t1", "r1", "t2", "r2", "t3", "r3"]
