"""The contract on Valkey Cluster: each test runs on a standalone server and on a 3+3 cluster (ValkeyCluster)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import valkey
from helpers import CommandCounter
from strands.session.file_session_manager import FileSessionManager
from strands.types.exceptions import SessionException
from test_multiagent import graph, interrupted_graph_resumed, interrupted_swarm_resumed
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.scripts import APPEND_MESSAGES
from strands_valkey_session_manager.testing.model import ScriptedModel

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

Store = valkey.Valkey | ValkeyCluster


@pytest.fixture(params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    """An emptied standalone client, then an emptied cluster client."""
    return request.getfixturevalue("client" if request.param == "standalone" else "cluster_client")


def keys_of(store: Store, session_id: str) -> list[str]:
    """Every key of one session, found with KEYS on every primary (fine in a test, never in the library)."""
    session_key = f"session:{{{session_id}}}" if isinstance(store, ValkeyCluster) else f"session:{session_id}"
    if isinstance(store, ValkeyCluster):
        found = store.keys(f"{session_key}*", target_nodes=ValkeyCluster.PRIMARIES)
    else:
        found = store.keys(f"{session_key}*")
    return sorted(key for key in found if key == session_key or key.startswith(f"{session_key}:"))  # not user-420


def texts(messages: list[Any]) -> list[str]:
    return [block["text"] for message in messages for block in message["content"] if "text" in block]


def test_seed_two_agents_share_one_session_each_with_its_own_keys(store: Store, make_agent) -> None:
    researcher = make_agent(ValkeySessionManager("workflow-001", store), "researcher", ["Valkey is fast."])
    writer = make_agent(ValkeySessionManager("workflow-001", store), "writer", ["Meet Valkey."])

    researcher("Research the key benefits of Valkey for AI workloads.")
    writer("Write a short blog intro about Valkey for AI.")

    keys = ValkeySessionManager("workflow-001", store).keys
    for agent_id, expected in {
        "researcher": ["Research the key benefits of Valkey for AI workloads.", "Valkey is fast."],
        "writer": ["Write a short blog intro about Valkey for AI.", "Meet Valkey."],
    }.items():
        stored = [json.loads(store.get(keys.message("workflow-001", agent_id, i)))["message"] for i in range(2)]
        assert texts(stored) == expected


def test_cluster_keys_wrap_the_session_id_in_a_hash_tag(cluster_client: ValkeyCluster, make_agent) -> None:
    make_agent(ValkeySessionManager("user-42", cluster_client))("hello")

    assert keys_of(cluster_client, "user-42") == [
        "session:{user-42}",
        "session:{user-42}:agent:assistant",
        "session:{user-42}:agent:assistant:message:0",
        "session:{user-42}:agent:assistant:message:1",
        "session:{user-42}:agent:assistant:messages",
        "session:{user-42}:index",
    ]


def test_every_key_of_a_session_sits_in_one_slot(cluster_client: ValkeyCluster, make_agent) -> None:
    for agent_id in ("researcher", "writer"):
        make_agent(ValkeySessionManager("user-42", cluster_client), agent_id)("hello")
    run_graph(cluster_client, "user-42")

    keys = keys_of(cluster_client, "user-42")
    slots = {cluster_client.execute_command("CLUSTER KEYSLOT", key, target_nodes=ValkeyCluster.RANDOM) for key in keys}

    assert any(":multi_agent:" in key for key in keys) and len(keys) == 11, keys
    assert slots == {cluster_client.keyslot("{user-42}")}


def test_new_manager_restores_the_conversation(store: Store, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", store), replies=["Hi Ada.", "Your name is Ada."])
    agent("My name is Ada.")
    agent("What is my name?")

    restored = make_agent(ValkeySessionManager("user-42", store))

    assert texts(restored.messages) == ["My name is Ada.", "Hi Ada.", "What is my name?", "Your name is Ada."]
    assert restored.messages == agent.messages


def run_graph(store: Store, session_id: str) -> Any:
    return graph(ValkeySessionManager(session_id, store), ScriptedModel(["notes"]), ScriptedModel(["draft"]))("task")


def test_graph_resumes_on_a_cluster_like_file_session_manager(cluster_client: ValkeyCluster, tmp_path) -> None:
    on_cluster = interrupted_graph_resumed(lambda: ValkeySessionManager("g", cluster_client))
    from_file = interrupted_graph_resumed(lambda: FileSessionManager(session_id="g", storage_dir=str(tmp_path)))

    assert on_cluster == from_file
    assert on_cluster[0]["execution_order"] == ["A", "B"]


def test_swarm_resumes_on_a_cluster_like_file_session_manager(cluster_client: ValkeyCluster, tmp_path) -> None:
    on_cluster = interrupted_swarm_resumed(lambda: ValkeySessionManager("sw", cluster_client))
    from_file = interrupted_swarm_resumed(lambda: FileSessionManager(session_id="sw", storage_dir=str(tmp_path)))

    assert on_cluster == from_file
    assert on_cluster[1]["status"] == "completed"


def test_all_keys_of_a_session_expire_together_within_its_ttl(store: Store, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", store, ttl=100), "a")
    agent("one")
    make_agent(ValkeySessionManager("user-42", store, ttl=100), "b")("two")
    agent("three")

    deadlines = [store.pexpiretime(key) for key in keys_of(store, "user-42")]
    now_ms = int(store.time()[0]) * 1000

    assert len(deadlines) == 12 and min(deadlines) > 0
    assert max(deadlines) - min(deadlines) <= 2000
    assert min(deadlines) - now_ms >= 0.9 * 100_000 - 1000


def test_delete_session_removes_every_key_and_no_other_sessions(store: Store, make_agent) -> None:
    for session_id in ("user-4", "user-42", "user-420"):
        make_agent(ValkeySessionManager(session_id, store))("hello")
    before = {session_id: keys_of(store, session_id) for session_id in ("user-4", "user-420")}

    ValkeySessionManager("user-42", store).delete_session("user-42")

    assert keys_of(store, "user-42") == []
    assert {session_id: keys_of(store, session_id) for session_id in ("user-4", "user-420")} == before


def test_agents_in_threads_share_one_session_without_disturbing_each_other(store: Store, make_agent) -> None:
    errors: list[BaseException] = []

    def converse(agent_id: str) -> None:
        try:
            agent = make_agent(ValkeySessionManager("shared", store), agent_id)
            for turn in range(3):
                agent(f"{agent_id} turn {turn}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=converse, args=(f"agent-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    for n in range(6):
        restored = make_agent(ValkeySessionManager("shared", store), f"agent-{n}")
        assert texts(restored.messages)[::2] == [f"agent-{n} turn {turn}" for turn in range(3)]


def count(store: Store, action: Callable[[], object]) -> CommandCounter:
    with CommandCounter(store) as counter:
        action()
    return counter


def test_restore_reads_n_messages_with_a_constant_number_of_commands(store: Store, make_agent) -> None:
    for session_id, turns in (("short", 2), ("long", 12)):
        agent = make_agent(ValkeySessionManager(session_id, store))
        for turn in range(turns):
            agent(f"turn {turn}")

    short = count(store, lambda: make_agent(ValkeySessionManager("short", store)))
    long = count(store, lambda: make_agent(ValkeySessionManager("long", store)))

    data = ("get", "mget", "set", "evalsha", "fcall", "exists", "zrange")
    assert {name: long.calls(name) for name in data} == {name: short.calls(name) for name in data}
    assert long.calls("mget") == 1


def test_each_appended_message_is_one_transaction(store: Store, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", store))
    agent("warm up")

    counter = count(store, lambda: agent("hello"))  # appends two messages; the agent's state did not change

    assert counter.calls("exec") == 2 and counter.calls("fcall", "evalsha") == 0
    assert counter.calls("mget", "exists", "zrange", "script|load", "function|load") == 0


def test_no_agent_path_uses_keys_or_scan(store: Store, make_agent) -> None:
    def whole_life() -> None:
        agent = make_agent(ValkeySessionManager("user-42", store))
        agent("hello")
        make_agent(ValkeySessionManager("user-42", store))("again")
        ValkeySessionManager("user-42", store).delete_session("user-42")

    assert count(store, whole_life).calls("keys", "scan") == 0


def test_writes_go_on_after_every_node_lost_its_scripts(store: Store, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", store))
    agent("before")
    assert all(store.script_exists(APPEND_MESSAGES.sha))
    store.script_flush()  # what a failover to a replica, or a restart, does to the script cache
    store.function_flush()  # and, without persistence, to the functions

    agent("after")  # plain commands
    make_agent(ValkeySessionManager("user-42", store), agent_id="joining")("after")  # scripts: record, first message

    assert texts(make_agent(ValkeySessionManager("user-42", store)).messages)[2:] == [
        "after",
        "(scripted reply) You said: after",
    ]
    joined = make_agent(ValkeySessionManager("user-42", store), agent_id="joining")
    assert texts(joined.messages) == ["after", "(scripted reply) You said: after"]


# -- a session's slot migrating (resharding): the scripts declare every key, so the server answers TRYAGAIN
# -- or ASK at dispatch, never "non local key" half-way through a script (tests/test_resharding.py: at scale)


def move_away_and_back(cluster, session_id: str, hold: Callable[[str], None]) -> None:
    """Migrate the session's slot to another master, ``hold(step)`` while it is open, then migrate it back."""
    slot = cluster.session_slot(session_id)
    home = cluster.serving(slot)
    target = next(master for master in cluster.primaries() if master is not home)
    try:
        cluster.migrate_slot(slot, target, batch=2, between=hold)
    finally:
        cluster.migrate_slot(slot, home)


def test_a_write_whose_slot_is_half_moved_waits_for_the_move_and_succeeds(cluster, cluster_client, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", cluster_client))
    agent("before")
    results: list[Any] = []

    def hold(step: str) -> None:
        if step == "split":  # half of the session's keys are on the target: its writes get TRYAGAIN meanwhile
            writer = threading.Thread(target=lambda: results.append(agent("during")))
            writer.start()
            writer.join(0.5)
            assert writer.is_alive(), "the write did not wait for the slot"
            results.append(writer)

    move_away_and_back(cluster, "user-42", hold)
    results[0].join(10)

    restored = make_agent(ValkeySessionManager("user-42", cluster_client))
    assert texts(restored.messages) == [
        "before",
        "(scripted reply) You said: before",
        "during",
        "(scripted reply) You said: during",
    ]
    assert all(cluster_client.pttl(key) > 0 for key in keys_of(cluster_client, "user-42"))


def test_a_slot_that_stays_half_moved_fails_the_write_saying_it_is_safe_to_repeat(
    cluster, cluster_client, make_agent, monkeypatch
) -> None:
    monkeypatch.setattr("strands_valkey_session_manager.replication.MIGRATION_WAIT", 0.3)
    manager = ValkeySessionManager("user-42", cluster_client)
    agent = make_agent(manager)
    agent("before")
    failures: list[BaseException] = []

    def hold(step: str) -> None:
        if step == "split":
            with pytest.raises(SessionException) as raised:
                agent("during")
            failures.append(raised.value)

    move_away_and_back(cluster, "user-42", hold)
    agent("after")  # re-sends what did not land

    assert "cluster slot is being migrated" in str(failures[0]) and "safe to repeat" in str(failures[0])
    stored = texts(make_agent(ValkeySessionManager("user-42", cluster_client)).messages)
    assert stored[:2] == ["before", "(scripted reply) You said: before"] and stored[-1].endswith("after")
