"""The session lock (lock_timeout): one invocation at a time per (session, agent), across processes.

Every behaviour runs on a standalone server and on the 3+3 cluster fixture. Holders are made to take
as long as the test wants by a model whose reply waits on an Event the test sets: no sleeps.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import valkey
from helpers import CommandCounter, CountingConnection, command_counts, counting_client, wait_until
from strands import Agent
from strands.multiagent import GraphBuilder, Swarm
from strands.types.exceptions import ConcurrencyException, SessionException
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import SessionBusyError, ValkeySessionManager
from strands_valkey_session_manager.cli import store as cli_store
from strands_valkey_session_manager.keys import KeySchema
from strands_valkey_session_manager.lock import max_attempts
from strands_valkey_session_manager.testing.model import ScriptedModel

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

SESSION, AGENT = "chat", "assistant"
SPAWN = multiprocessing.get_context("spawn")


# -- where the session lives ------------------------------------------------------------------


@dataclass
class Store:
    """A server (standalone or cluster) the test and its worker processes talk to."""

    client: Any
    spec: tuple[str, int]  # (kind, port): what a worker process needs to connect

    @property
    def keys(self) -> KeySchema:
        return KeySchema(cluster=self.spec[0] == "cluster")

    @property
    def lock_key(self) -> str:
        return self.keys.lock(SESSION, self.keys.agent_suffix(AGENT))


def connect(spec: tuple[str, int]) -> Any:
    kind, port = spec
    if kind == "cluster":
        return ValkeyCluster(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
    return valkey.Valkey(port=port, decode_responses=True, socket_timeout=10)


@pytest.fixture(params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "cluster":
        client = request.getfixturevalue("cluster_client")
        yield Store(client, ("cluster", request.getfixturevalue("cluster").nodes[0].port))
    else:
        client = request.getfixturevalue("client")
        yield Store(client, ("standalone", request.getfixturevalue("server").port))


# -- agents -------------------------------------------------------------------------------------


def last_user_text(messages: list[Any]) -> str:
    return next(block["text"] for m in reversed(messages) if m["role"] == "user" for block in m["content"])


def held_reply(entered: Any, proceed: Any) -> Callable[[list[Any]], str]:
    """A model reply that says it was called, then waits until the test lets it answer."""

    def reply(messages: list[Any]) -> str:
        entered.set()
        if not proceed.wait(60):
            raise TimeoutError("the test never let the model answer")
        return f"reply to {last_user_text(messages)}"

    return reply


def locked_agent(client: Any, replies: Any = (), timeout: float = 30, lease: float = 30, **options: Any) -> Agent:
    manager = ValkeySessionManager(SESSION, client, lock_timeout=timeout, lock_lease=lease, **options)
    return Agent(agent_id=AGENT, model=ScriptedModel(replies), session_manager=manager, callback_handler=None)


def invoke_in_process(
    spec: tuple[str, int],
    prompt: str,
    lease: float,
    entered: Any,
    proceed: Any,
    outcomes: Any,
    start: Any = None,
) -> None:
    """Worker: build a locked agent, wait for ``start``, invoke it once, report how it ended."""
    agent = locked_agent(connect(spec), held_reply(entered, proceed), timeout=30, lease=lease)
    if start is not None:
        start.wait(60)
    try:
        agent(prompt)
        outcomes.put((prompt, "ok"))
    except Exception as error:  # reported to the test, which asserts on it
        outcomes.put((prompt, repr(session_error(error))))


def session_error(error: BaseException) -> BaseException:
    """The SessionException behind ``error``: the SDK wraps one raised inside its event loop (EventLoopException)."""
    return error.__cause__ if isinstance(error.__cause__, SessionException) else error


def stored_texts(store: Store) -> list[str]:
    manager = ValkeySessionManager(SESSION, store.client)
    return [block["text"] for m in manager.list_messages(SESSION, AGENT) for block in m.message["content"]]


def stored_ids(store: Store) -> list[str]:
    return list(store.client.zrange(store.keys.messages(SESSION, AGENT), 0, -1))


def snapshot(store: Store) -> dict[str, Any]:
    """Every key of the agent's session with its serialized value (DUMP; TTLs aside)."""
    keys = [store.keys.session(SESSION), store.keys.index(SESSION), store.keys.agent(SESSION, AGENT)]
    keys += [store.keys.messages(SESSION, AGENT), store.lock_key]
    keys += [store.keys.message(SESSION, AGENT, int(i)) for i in stored_ids(store)]
    keys.append(store.keys.message(SESSION, AGENT, len(stored_ids(store))))  # the next id: must stay absent
    return {key: store.client.dump(key) for key in keys}


class Holder:
    """A locked agent invoked on a thread, held inside its model call (so holding the lock) until ``finish``."""

    def __init__(self, client: Any, prompt: str = "held", **options: Any) -> None:
        entered, self.proceed = threading.Event(), threading.Event()
        agent = locked_agent(client, held_reply(entered, self.proceed), **options)
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._invoke, args=(agent, prompt))
        self.thread.start()
        assert entered.wait(30), "the holder's model was never called"

    def _invoke(self, agent: Agent, prompt: str) -> None:
        try:
            self.outcome.append(agent(prompt))
        except Exception as error:  # the test asserts on it
            self.outcome.append(error)

    def finish(self) -> Any:
        """Let the model answer; return the invocation's result or exception."""
        self.proceed.set()
        self.thread.join(30)
        return self.outcome[0]


Hold = Callable[..., Holder]


@pytest.fixture
def hold() -> Iterator[Hold]:
    """``hold(client, **options)`` starts a Holder; any the test leaves holding are finished at teardown."""
    holders: list[Holder] = []

    def start(client: Any, prompt: str = "held", **options: Any) -> Holder:
        holders.append(Holder(client, prompt, **options))
        return holders[-1]

    yield start
    for holder in holders:
        holder.proceed.set()
        holder.thread.join(30)


# -- the tests ----------------------------------------------------------------------------------


def test_two_processes_invoking_at_once_both_succeed_one_after_the_other(store: Store) -> None:
    entered, proceed, start, outcomes = SPAWN.Event(), SPAWN.Event(), SPAWN.Barrier(2), SPAWN.Queue()
    workers = [
        SPAWN.Process(
            target=invoke_in_process, args=(store.spec, f"question {i}", 30, entered, proceed, outcomes, start)
        )
        for i in (1, 2)
    ]
    for worker in workers:
        worker.start()
    try:
        wait_until(entered.is_set, 90, "one invocation to take the lock and call its model")
        # The holder now sits in its model; any lock attempt from here on is the other one finding it taken.
        attempts = command_counts(store.client).get("exists", 0)
        wait_until(lambda: command_counts(store.client).get("exists", 0) > attempts, 30, "the other to wait")
        proceed.set()
        for worker in workers:
            worker.join(60)
    finally:
        for worker in workers:
            worker.kill()

    assert sorted(outcomes.get(timeout=10) for _ in workers) == [("question 1", "ok"), ("question 2", "ok")]
    texts = stored_texts(store)
    assert stored_ids(store) == ["0", "1", "2", "3"]
    assert sorted(texts[0::2]) == ["question 1", "question 2"]
    assert texts[1::2] == [f"reply to {texts[0]}", f"reply to {texts[2]}"]


def test_a_caller_that_cannot_get_the_lock_in_time_gets_session_busy_error_and_writes_nothing(
    store: Store, hold: Hold
) -> None:
    holder = hold(store.client)
    waiter = locked_agent(store.client, ["never used"], timeout=0.5)
    before = snapshot(store)

    with pytest.raises(SessionBusyError) as busy:
        waiter("impatient")

    assert isinstance(busy.value, SessionException)
    assert (busy.value.session_id, busy.value.agent_id) == (SESSION, AGENT)
    assert busy.value.waited >= 0.5
    assert "session busy" in str(busy.value) and "lock_timeout=0.5s" in str(busy.value)
    assert snapshot(store) == before
    assert waiter.model.calls == 0
    assert not isinstance(holder.finish(), Exception)
    assert stored_texts(store) == ["held", "reply to held"]


def test_an_invocation_that_raises_releases_the_lock_at_once(store: Store) -> None:
    def fail(messages: list[Any]) -> str:
        raise RuntimeError("model unavailable")

    with pytest.raises(RuntimeError, match="model unavailable"):
        locked_agent(store.client, fail)("hello")

    assert store.client.exists(store.lock_key) == 0
    locked_agent(store.client, timeout=0)("again")  # timeout 0: one attempt, which finds the lock free
    assert stored_texts(store)[-2:] == ["again", "(scripted reply) You said: again"]


def test_invoke_async_calls_in_one_event_loop_take_turns(store: Store) -> None:
    first, second = locked_agent(store.client), locked_agent(store.client)

    async def both() -> list[Any]:
        return await asyncio.gather(first.invoke_async("one"), second.invoke_async("two"))

    asyncio.run(both())

    texts = stored_texts(store)
    assert sorted(texts[0::2]) == ["one", "two"]
    assert texts[1::2] == [f"(scripted reply) You said: {texts[0]}", f"(scripted reply) You said: {texts[2]}"]


def test_a_stream_dropped_midway_releases_the_lock(store: Store) -> None:
    agent = locked_agent(store.client)

    async def first_event_only() -> bool:
        stream = agent.stream_async("hello")
        async for _ in stream:
            break
        held = bool(store.client.exists(store.lock_key))
        await stream.aclose()
        return held

    assert asyncio.run(first_event_only())
    assert store.client.exists(store.lock_key) == 0


@contextmanager
def holding_process(store: Store, prompt: str) -> Iterator[tuple[Any, Any, Any]]:
    """A process whose locked agent (1.5 s lease) holds the lock inside its model call; killed on leaving."""
    entered, proceed, outcomes = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    holder = SPAWN.Process(target=invoke_in_process, args=(store.spec, prompt, 1.5, entered, proceed, outcomes))
    holder.start()
    try:
        wait_until(entered.is_set, 90, "the holder to take the lock and call its model")
        yield holder, proceed, outcomes
    finally:
        holder.kill()
        holder.join(30)


def test_a_killed_holders_lease_expires_and_the_next_caller_continues_the_conversation(store: Store) -> None:
    with holding_process(store, "doomed") as (holder, _, _):
        assert store.client.get(store.lock_key) is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)

    locked_agent(store.client, timeout=30, lease=1.0)("after the crash")

    assert stored_texts(store) == ["doomed", "after the crash", "(scripted reply) You said: after the crash"]
    assert stored_ids(store) == ["0", "1", "2"]
    assert store.client.exists(store.lock_key) == 0


def test_a_holder_paused_past_its_lease_cannot_write_after_another_took_the_lock(store: Store) -> None:
    with holding_process(store, "paused") as (holder, proceed, outcomes):
        os.kill(holder.pid, signal.SIGSTOP)  # no renewals from here on
        wait_until(lambda: store.client.exists(store.lock_key) == 0, 30, "the paused holder's lease to run out")
        locked_agent(store.client, timeout=30)("while it slept")
        after_takeover = snapshot(store)
        os.kill(holder.pid, signal.SIGCONT)
        proceed.set()
        prompt, outcome = outcomes.get(timeout=60)

    assert prompt == "paused"
    assert outcome.startswith("SessionException(") and "lost the session lock" in outcome
    assert snapshot(store) == after_takeover
    assert stored_texts(store) == ["paused", "while it slept", "(scripted reply) You said: while it slept"]


def test_a_waiting_caller_closes_a_dangling_tool_use_only_under_the_lock(store: Store, hold: Hold) -> None:
    manager = ValkeySessionManager(SESSION, store.client)
    setup = Agent(agent_id=AGENT, model=ScriptedModel(), session_manager=manager, callback_handler=None)
    setup("first")
    dangling = {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}}
    manager.append_message({"role": "assistant", "content": [dangling]}, setup)
    waiter = locked_agent(store.client)  # restored now: its history ends in the unanswered toolUse too

    holder = hold(store.client)  # it closes the toolUse itself, then waits in its model
    result: list[Any] = []
    waiting = threading.Thread(target=lambda: result.append(waiter("second")))
    waiting.start()
    attempts = command_counts(store.client).get("exists", 0)
    wait_until(lambda: command_counts(store.client).get("exists", 0) > attempts, 30, "the waiter to wait")
    holder.finish()
    waiting.join(30)

    assert result, "the waiting invocation failed"
    stored = ValkeySessionManager(SESSION, store.client).list_messages(SESSION, AGENT)
    tool_results = [m for m in stored if any("toolResult" in block for block in m.message["content"])]
    assert len(tool_results) == 1  # closed once, by the holder; the waiter saw it closed
    texts = [block.get("text") for m in stored[4:] for block in m.message["content"]]
    assert texts == ["held", "reply to held", "second", "(scripted reply) You said: second"]
    assert stored_ids(store) == [str(i) for i in range(8)]


def test_the_lock_key_lives_in_the_session_and_delete_session_removes_it(store: Store, hold: Hold) -> None:
    holder = hold(store.client)
    expected = (
        "session:{chat}:lock:agent:assistant" if store.spec[0] == "cluster" else "session:chat:lock:agent:assistant"
    )
    assert store.lock_key == expected
    listed = {info.key: info for info in cli_store.Store.of(store.client).key_infos(SESSION)}  # the CLI's `keys`
    assert 0 < listed[expected].ttl_ms <= 30_000

    ValkeySessionManager(SESSION, store.client).delete_session(SESSION)

    assert store.client.exists(expected) == 0
    assert all(value is None for value in snapshot(store).values())
    late = session_error(holder.finish())
    assert isinstance(late, SessionException) and "no longer exists" in str(late)
    assert store.client.exists(store.keys.session(SESSION)) == 0


def test_the_ttl_refresh_never_extends_a_lease(store: Store, hold: Hold) -> None:
    holder = hold(store.client, ttl=3600, lease=30)
    store.client.pexpire(store.keys.session(SESSION), 100_000)  # the session's refresh is due now
    ValkeySessionManager(SESSION, store.client).read_agent(SESSION, AGENT)  # a restore: refreshes every key

    assert store.client.pttl(store.keys.session(SESSION)) > 3_000_000
    assert 0 < store.client.pttl(store.lock_key) <= 30_000
    holder.finish()


def test_a_lease_never_outlives_its_session(store: Store, hold: Hold) -> None:
    holder = hold(store.client, ttl=5, lease=30)

    lock_ends = store.client.execute_command("PEXPIRETIME", store.lock_key)
    session_ends = store.client.execute_command("PEXPIRETIME", store.keys.session(SESSION))
    assert 0 < lock_ends <= session_ends
    holder.finish()


def orchestrator(kind: str, client: Any, replies: Any, timeout: float) -> Any:
    """A one-node Graph or Swarm on a locked manager."""
    node = Agent(name="A", agent_id="A", model=ScriptedModel(replies), callback_handler=None)
    manager = ValkeySessionManager(SESSION, client, lock_timeout=timeout)
    if kind == "swarm":
        return Swarm([node], session_manager=manager)
    builder = GraphBuilder()
    builder.add_node(node, "A")
    builder.set_entry_point("A")
    builder.set_max_node_executions(5)
    builder.set_session_manager(manager)
    return builder.build()


@pytest.mark.parametrize("kind", ["graph", "swarm"])
def test_an_orchestrator_run_holds_the_lock_on_its_id(store: Store, kind: str) -> None:
    entered, proceed = threading.Event(), threading.Event()
    first = orchestrator(kind, store.client, held_reply(entered, proceed), 30)
    running = threading.Thread(target=first, args=("task",))
    running.start()
    assert entered.wait(30)
    second = orchestrator(kind, store.client, ["second"], 0.2)

    with pytest.raises(SessionBusyError) as busy:
        second("task")

    assert busy.value.agent_id == f"default_{kind}"
    assert store.client.exists(store.keys.lock(SESSION, store.keys.multi_agent_suffix(f"default_{kind}"))) == 1
    proceed.set()
    running.join(30)
    assert str(second("task").status.value) == "completed"  # free again: the second one runs


def test_the_same_agent_invoked_twice_at_once_in_one_process_gets_the_sdks_concurrency_error(store: Store) -> None:
    entered, proceed = threading.Event(), threading.Event()
    agent = locked_agent(store.client, held_reply(entered, proceed))
    running = threading.Thread(target=agent, args=("first",))
    running.start()
    assert entered.wait(30)

    with pytest.raises(ConcurrencyException):
        agent("second")  # shares the running invocation's lock: the SDK's own rule decides

    assert store.client.exists(store.lock_key) == 1  # still held for the running invocation
    proceed.set()
    running.join(30)
    assert store.client.exists(store.lock_key) == 0
    assert stored_texts(store) == ["first", "reply to first"]


def test_waiting_for_a_busy_lock_sends_a_bounded_number_of_commands(client: valkey.Valkey, hold: Hold) -> None:
    holder = hold(client, lease=300)  # renews every 100 s: not within this wait
    waiter = locked_agent(client, timeout=2.0)

    with CommandCounter(client) as counted, pytest.raises(SessionBusyError):
        waiter("waiting")

    attempts = counted.calls("fcall")
    assert counted.counts == {"fcall": attempts, "exists": attempts}  # a busy attempt: FCALL + EXISTS
    assert 2 <= attempts <= max_attempts(2.0) <= 12
    holder.finish()


def test_an_uncontended_locked_invocation_costs_two_round_trips_and_reads_nothing_again(
    server: Any, client: valkey.Valkey
) -> None:
    def round_trips_of_a_turn(session: str, **lock: Any) -> tuple[int, int]:
        counting = counting_client(server.port)
        Agent(agent_id=AGENT, model=ScriptedModel(), session_manager=ValkeySessionManager(session, counting))("first")
        manager = ValkeySessionManager(session, counting, **lock)
        agent = Agent(agent_id=AGENT, model=ScriptedModel(), session_manager=manager, callback_handler=None)
        before = CountingConnection.round_trips
        with CommandCounter(client) as counted:
            agent("second")
        return CountingConnection.round_trips - before, counted.calls("mget")

    unlocked, unlocked_reads = round_trips_of_a_turn("plain")
    locked, locked_reads = round_trips_of_a_turn("locked", lock_timeout=30)

    assert locked == unlocked + 2  # acquire, release; the writes carry their fence in the same round trip
    assert locked_reads == unlocked_reads == 0  # restored just before: no second restore under the lock


def test_a_bytes_client_hands_over_the_conversation_too(raw_client: valkey.Valkey) -> None:
    first, second = locked_agent(raw_client), locked_agent(raw_client)  # both restored before either runs
    first("one")
    second("two")  # sees that the agent changed since it read it, and reads it again

    assert [m["content"][0]["text"] for m in second.messages] == [
        "one",
        "(scripted reply) You said: one",
        "two",
        "(scripted reply) You said: two",
    ]


def test_fenced_writes_wait_for_replicas_too(cluster_client: ValkeyCluster) -> None:
    store = Store(cluster_client, ("cluster", 0))
    with CommandCounter(cluster_client) as counted:
        for prompt in ("one", "two"):
            locked_agent(cluster_client, wait_replicas=1)(prompt)

    assert counted.calls("wait") >= 4  # each append (fenced) was followed by WAIT

    assert stored_texts(store) == ["one", "(scripted reply) You said: one", "two", "(scripted reply) You said: two"]
    assert cluster_client.exists(store.lock_key) == 0


def test_lock_settings_are_checked_before_anything_is_written(client: valkey.Valkey) -> None:
    for options in ({"lock_timeout": -1}, {"lock_timeout": True}, {"lock_timeout": 1, "lock_lease": 0}):
        with pytest.raises(ValueError, match="lock_"):
            ValkeySessionManager(SESSION, client, **options)
    assert client.dbsize() == 0
