"""Swarm and Graph persist and resume through the multi-agent repository methods, as with files."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import valkey
from helpers import fails_first_time, two_node_graph
from strands import Agent
from strands.multiagent import Swarm
from strands.session.file_session_manager import FileSessionManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

ORDERED = ("status", "execution_order")
UNORDERED = ("completed_nodes", "failed_nodes", "next_nodes_to_execute")  # serialised from sets


def graph(session_manager: Any, model_a: ScriptedModel, model_b: ScriptedModel) -> Any:
    return two_node_graph(session_manager, model_a, model_b)


def interrupted_graph_resumed(manager_factory: Callable[[], Any]) -> tuple[dict[str, Any], int, int]:
    """Run A then B (which fails once), then resume in a new Graph; return the state and model calls."""
    model_b = ScriptedModel(fails_first_time("B done"))
    try:
        graph(manager_factory(), ScriptedModel(["A done"]), model_b)("task")
    except RuntimeError:
        pass
    model_a_again = ScriptedModel(["A again"])
    graph(manager_factory(), model_a_again, model_b)("task")
    manager = manager_factory()
    state = manager.read_multi_agent(manager.session_id, "default_graph")
    comparable = {field: state[field] for field in ORDERED} | {field: sorted(state[field]) for field in UNORDERED}
    return comparable, model_a_again.calls, model_b.calls


def test_graph_resumes_from_its_last_completed_node_like_file_session_manager(client: valkey.Valkey, tmp_path) -> None:
    from_valkey = interrupted_graph_resumed(lambda: ValkeySessionManager(session_id="g", client=client))
    from_file = interrupted_graph_resumed(lambda: FileSessionManager(session_id="g", storage_dir=str(tmp_path)))

    assert from_valkey == from_file
    state, a_calls_on_resume, b_calls = from_valkey
    assert a_calls_on_resume == 0  # A completed before the failure: not run again
    assert b_calls == 2
    assert state["execution_order"] == ["A", "B"]


def test_graph_state_is_stored_as_plain_json_under_the_multi_agent_key(client: valkey.Valkey) -> None:
    g = graph(ValkeySessionManager(session_id="g", client=client), ScriptedModel(["a"]), ScriptedModel(["b"]))
    g("task")
    stored = json.loads(client.get("session:g:multi_agent:default_graph"))
    assert stored["type"] == "graph"
    assert stored["status"] == "completed"
    assert sorted(stored["completed_nodes"]) == ["A", "B"]


def interrupted_swarm_resumed(manager_factory: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a swarm whose agent fails once, then a new Swarm on the same session; return both states."""
    model = ScriptedModel(fails_first_time("alpha done"))

    def swarm() -> Swarm:
        agent = Agent(name="alpha", agent_id="alpha", model=model, callback_handler=None)
        return Swarm([agent], session_manager=manager_factory())

    try:
        swarm()("go")
    except RuntimeError:
        pass
    manager = manager_factory()
    after_failure = manager.read_multi_agent(manager.session_id, "default_swarm")
    swarm()("go")
    after_resume = manager.read_multi_agent(manager.session_id, "default_swarm")
    keep = ("type", "status", "node_history")
    return {k: after_failure.get(k) for k in keep}, {k: after_resume.get(k) for k in keep}


def test_swarm_persists_and_resumes_like_file_session_manager(client: valkey.Valkey, tmp_path) -> None:
    from_valkey = interrupted_swarm_resumed(lambda: ValkeySessionManager(session_id="sw", client=client))
    from_file = interrupted_swarm_resumed(lambda: FileSessionManager(session_id="sw", storage_dir=str(tmp_path)))

    assert from_valkey == from_file
    assert from_valkey[0]["type"] == "swarm"
    assert from_valkey[1]["status"] == "completed"
    assert client.ttl("session:sw:multi_agent:default_swarm") > 3500


def test_delete_session_removes_multi_agent_state(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(session_id="g", client=client)
    graph(manager, ScriptedModel(["a"]), ScriptedModel(["b"]))("task")
    manager.delete_session("g")
    assert client.keys("*") == []


def test_delete_session_on_logout_removes_multi_agent_state(client: valkey.Valkey) -> None:
    graph(ValkeySessionManager(session_id="g", client=client), ScriptedModel(["a"]), ScriptedModel(["b"]))("task")
    assert client.exists("session:g:multi_agent:default_graph")  # what a new manager must find and delete
    ValkeySessionManager(session_id="g", client=client).delete_session("g")
    assert client.keys("*") == []
