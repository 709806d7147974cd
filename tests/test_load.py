"""Load: 50 agents, in threads and in processes, 10 to a session, all at once; every message lands, in order, once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import valkey
from _reliability import assert_index_consistent
from strands import Agent, tool

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel

AGENTS = 50
SESSIONS = 10
TURNS = 10
PROCESSES = 2
AGENTS_PER_PROCESS = 15  # the other 20 run as threads of the test process


@tool
def note(who: int, turn: int) -> str:
    """Note that an agent reached a turn."""
    return f"noted {who}/{turn}"


def session_of(agent: int) -> str:
    return f"load-{agent % SESSIONS}"


def converse(client: valkey.Valkey, agent: int, gate: tuple[Any, Any], errors: list[str]) -> None:
    """One agent: report ready, open its session when the gate opens (all agents at once), run TURNS turns."""
    ready, go = gate
    try:
        replies = [r for t in range(TURNS) for r in ({"tool": "note", "input": {"who": agent, "turn": t}}, f"done {t}")]
        ready.release()
        go.wait()
        worker = Agent(
            agent_id=f"agent-{agent}",
            model=ScriptedModel(replies),
            tools=[note],
            session_manager=ValkeySessionManager(session_id=session_of(agent), client=client),
            callback_handler=None,
        )
        for turn in range(TURNS):
            worker(f"agent {agent} turn {turn}")
    except Exception as error:  # noqa: BLE001 - reported to the test
        errors.append(f"agent {agent}: {type(error).__name__}: {error}")


def run_threads(port: int, agents: list[int], gate: tuple[Any, Any]) -> list[str]:
    """Run ``agents`` as threads sharing one client (and its connection pool); return their errors."""
    client = valkey.Valkey(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=30)
    errors: list[str] = []
    threads = [threading.Thread(target=converse, args=(client, agent, gate, errors)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def process_main(port: int, agents: list[int], gate: tuple[Any, Any], report: Any) -> None:
    """A worker process: its agents as threads; reports their errors on ``report``."""
    report.put(run_threads(port, agents, gate))


def expected_conversation(agent: int) -> list[tuple[str, str, Any]]:
    """(role, kind, payload) of every message the agent must have stored, in order."""
    messages = []
    for turn in range(TURNS):
        messages += [
            ("user", "text", f"agent {agent} turn {turn}"),
            ("assistant", "toolUse", {"who": agent, "turn": turn}),
            ("user", "toolResult", f"noted {agent}/{turn}"),
            ("assistant", "text", f"done {turn}"),
        ]
    return messages


def payload(block: dict[str, Any]) -> Any:
    """What the load test puts in a content block: its text, tool input, or tool result text."""
    if "toolUse" in block:
        return block["toolUse"]["input"]
    if "toolResult" in block:
        return block["toolResult"]["content"][0]["text"]
    return block["text"]


def stored_conversation(manager: ValkeySessionManager, agent: int) -> list[tuple[str, str, Any]]:
    return [
        (record.message["role"], next(iter(record.message["content"][0])), payload(record.message["content"][0]))
        for record in manager.list_messages(session_of(agent), f"agent-{agent}")
    ]


def test_fifty_concurrent_agents_in_ten_sessions_store_exactly_their_messages(client, server, record_property) -> None:
    context = multiprocessing.get_context("spawn")
    gate, report = (context.Semaphore(0), context.Event()), context.Queue()
    in_processes = [list(range(AGENTS_PER_PROCESS * p, AGENTS_PER_PROCESS * (p + 1))) for p in range(PROCESSES)]
    in_threads = list(range(AGENTS_PER_PROCESS * PROCESSES, AGENTS))
    processes = [
        context.Process(target=process_main, args=(server.port, agents, gate, report)) for agents in in_processes
    ]
    for process in processes:
        process.start()
    errors: list[str] = []
    local = threading.Thread(target=lambda: errors.extend(run_threads(server.port, in_threads, gate)))
    local.start()
    for _ in range(AGENTS):
        assert gate[0].acquire(timeout=120), "an agent never got ready"

    started = time.monotonic()
    gate[1].set()
    local.join()
    for _ in processes:
        errors.extend(report.get(timeout=300))
    elapsed = time.monotonic() - started
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert errors == []
    manager = ValkeySessionManager(session_id=session_of(0), client=client)
    for agent in range(AGENTS):
        assert_index_consistent(client, session_of(agent), f"agent-{agent}")
        assert stored_conversation(manager, agent) == expected_conversation(agent), f"agent {agent}"
    for session in range(SESSIONS):
        keys_per_agent = 2 + 4 * TURNS  # agent record, id set, messages
        assert sum(1 for _ in client.scan_iter(match=f"session:load-{session}*")) == 2 + 5 * keys_per_agent
    turns_per_second = AGENTS * TURNS / elapsed
    record_property("turns_per_second", round(turns_per_second, 1))
    print(f"\n{AGENTS} agents x {TURNS} turns in {elapsed:.2f}s: {turns_per_second:.0f} turns/s")
