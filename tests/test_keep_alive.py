"""A running invocation keeps its session alive (CONTRACT.md, Expiry: "A running invocation is not idle").

``ttl`` is idle life: a turn longer than ``ttl`` (a slow model, a long tool) must not expire its session
under it. The manager's heartbeat keeps the deadline ahead every ``0.1 * ttl`` while an invocation runs,
and after it the idle clock runs again (invocation.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import valkey
from helpers import recording_client, wait_until
from strands import Agent
from strands.multiagent import Swarm
from strands.types.exceptions import EventLoopException, SessionException

from strands_valkey_session_manager import ValkeySessionManager, invocation, scripts
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

TTL = 2  # seconds: a keep-alive every 0.2 s
SLOW = 5.0  # seconds a slow model call takes: longer than the ttl
SESSION = "s"


def session_keys(client: valkey.Valkey) -> list[str]:
    return sorted(client.keys(f"session:{SESSION}") + client.keys(f"session:{SESSION}:*"))


def remaining_ms(client: valkey.Valkey) -> dict[str, int]:
    return {key: client.pttl(key) for key in session_keys(client)}


def keep_alive_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "session-keep-alive"]


def stopped(client: valkey.Valkey) -> None:
    """Assert that nothing keeps the session alive any more, and that it is back on the idle clock."""
    assert invocation.scheduled() == 0  # no beat waits
    deadlines = {key: client.pexpiretime(key) for key in session_keys(client)}
    time.sleep(3 * 0.1 * TTL)  # not a wait for a condition: three beats would have moved the deadline
    assert {key: client.pexpiretime(key) for key in session_keys(client)} == deadlines
    assert all(0 < life <= TTL * 1000 for life in remaining_ms(client).values())


def calls_of(script: scripts.Script, sent: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The calls of ``script`` among the commands sent (by FCALL, or EVALSHA where functions are refused)."""
    return [c for c in sent if c[:2] in (("FCALL", script.function), ("EVALSHA", script.sha))]


def keep_alives(sent: list[tuple[Any, ...]]) -> int:
    """Keep-alive commands sent: lua/keep_alive.lua, or a lock renewal carrying one (two more ARGV)."""
    carried = [c for c in calls_of(scripts.LOCK, sent) if "renew" in c and len(c) == 2 + 1 + 5 + 8]
    return len(calls_of(scripts.KEEP_ALIVE, sent)) + len(carried)


def lock_options(lock: bool) -> dict[str, Any]:
    return {"lock_timeout": 5} if lock else {}


def slow_agent(manager: ValkeySessionManager, delay: float = SLOW, replies: Any = ("slow answer",)) -> Agent:
    return Agent(
        agent_id="assistant", model=ScriptedModel(replies, delay=delay), session_manager=manager, callback_handler=None
    )


def expires_within(client: valkey.Valkey, seconds: float) -> None:
    wait_until(lambda: not session_keys(client), seconds, "the idle session to expire")


@pytest.fixture
def sampled(client: valkey.Valkey) -> Iterator[list[int]]:
    """Samples of the session's shortest remaining life (ms), taken every 50 ms while the test runs."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            lives = [life for life in remaining_ms(client).values() if life > -2]
            if lives:
                samples.append(min(lives))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield samples
    stop.set()
    thread.join()


@pytest.mark.parametrize("lock", [False, True], ids=["no lock", "lock"])
def test_a_turn_longer_than_the_ttl_completes_and_every_message_is_stored(
    client: valkey.Valkey, sampled: list[int], lock: bool
) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL, **lock_options(lock)))

    agent("hello")

    lives = remaining_ms(client)
    assert len(lives) == 6  # session, index, agent, its ids, two messages (the lock key is released)
    # Every key still carries a TTL, and it is the idle clock's again: at most ttl, from the end of the turn.
    assert all(TTL * 500 < life <= TTL * 1000 for life in lives.values()), lives
    # While the turn ran, the session never had less than 0.9 ttl left (it would have expired 3 s in).
    assert len(sampled) > 50 and min(sampled) >= 0.9 * TTL * 1000 - 100, min(sampled)
    restored = Agent(agent_id="assistant", session_manager=ValkeySessionManager(SESSION, client, ttl=TTL))
    assert restored.messages == agent.messages
    assert [m["content"][0]["text"] for m in restored.messages] == ["hello", "slow answer"]


@pytest.mark.parametrize("lock", [False, True], ids=["no lock", "lock"])
def test_a_swarm_whose_node_outlasts_the_ttl_completes_and_its_state_is_stored(
    client: valkey.Valkey, lock: bool
) -> None:
    manager = ValkeySessionManager(SESSION, client, ttl=TTL, **lock_options(lock))
    node = Agent(name="node", agent_id="node", model=ScriptedModel(["done"], delay=SLOW), callback_handler=None)
    swarm = Swarm([node], session_manager=manager)

    result = swarm("task")

    assert result.status.value == "completed"
    state = ValkeySessionManager(SESSION, client, ttl=TTL).read_multi_agent(SESSION, swarm.id)
    assert state is not None and state["status"] == "completed" and state["node_history"] == ["node"]
    lives = remaining_ms(client)
    assert len(lives) == 3 and all(TTL * 500 < life <= TTL * 1000 for life in lives.values()), lives


def test_after_a_long_turn_the_session_expires_ttl_after_its_end(client: valkey.Valkey) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL), delay=1.0)
    agent("hello")
    ended = time.monotonic()

    expires_within(client, TTL + 2)

    assert time.monotonic() - ended > TTL * 0.5  # not at once: the idle clock ran its ttl
    assert session_keys(client) == []


@pytest.mark.sync_client_only  # it records what the synchronous client's connection sends
def test_a_turn_shorter_than_a_tenth_of_the_ttl_sends_no_keep_alive(server: LocalValkey) -> None:
    recording, sent = recording_client(server.port)
    recording.flushall()
    for lock in (False, True):
        agent = slow_agent(ValkeySessionManager(f"short-{lock}", recording, ttl=TTL, **lock_options(lock)), delay=0)
        for turn in range(3):
            agent(f"turn {turn}")
    assert keep_alives(sent) == 0
    assert not [c for c in sent if "renew" in c]
    recording.close()


@pytest.mark.sync_client_only  # it records what the synchronous client's connection sends
@pytest.mark.parametrize("lock", [False, True], ids=["no lock", "lock"])
def test_a_long_turn_keeps_alive_at_most_once_per_tenth_of_the_ttl(server: LocalValkey, lock: bool) -> None:
    recording, sent = recording_client(server.port)
    recording.flushall()
    agent = slow_agent(ValkeySessionManager(SESSION, recording, ttl=TTL, **lock_options(lock)), delay=1.5)
    started = time.monotonic()

    agent("hello")

    elapsed = time.monotonic() - started
    # One per 0.2 s from 0.2 s into the turn, and one at its end (back to exactly now + ttl).
    assert 2 <= keep_alives(sent) <= elapsed / (0.1 * TTL) + 1, (keep_alives(sent), elapsed)
    recording.close()


@pytest.mark.sync_client_only  # it records what the synchronous client's connection sends
def test_with_the_lock_a_renewal_carries_the_keep_alive_when_both_fall_due(server: LocalValkey) -> None:
    recording, sent = recording_client(server.port)
    recording.flushall()
    ttl = 3  # a keep-alive every 0.3 s; the lease (0.3 s) is renewed every 0.1 s
    agent = slow_agent(ValkeySessionManager(SESSION, recording, ttl=ttl, lock_timeout=5, lock_lease=0.3), delay=1.5)
    started = time.monotonic()

    agent("hello")

    elapsed = time.monotonic() - started
    renewals = [c for c in calls_of(scripts.LOCK, sent) if "renew" in c]
    assert len(renewals) >= 5  # the lease needs them: one per 0.1 s
    assert len(calls_of(scripts.KEEP_ALIVE, sent)) == 1  # the last word only
    assert 2 <= keep_alives(sent) <= elapsed / (0.1 * ttl) + 1, (keep_alives(sent), elapsed)
    recording.close()


@pytest.mark.parametrize("lock", [False, True], ids=["no lock", "lock"])
def test_a_session_deleted_during_a_turn_is_named_as_the_cause(
    client: valkey.Valkey, caplog: pytest.LogCaptureFixture, lock: bool
) -> None:
    started = threading.Event()

    def reply(messages: Any) -> str:
        started.set()
        return "too late"

    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL, **lock_options(lock)), 1.0, reply)
    deleter = threading.Thread(
        target=lambda: (started.wait(30), ValkeySessionManager(SESSION, client).delete_session(SESSION))
    )
    deleter.start()

    # The assistant's message cannot be stored: the SDK raises it from its event loop.
    with caplog.at_level(logging.WARNING), pytest.raises(EventLoopException, match="no longer exists") as failed:
        agent("hello")

    deleter.join()
    assert isinstance(failed.value.__cause__, SessionException)
    log = caplog.text
    assert "the session no longer exists" in log and "stopped keeping it alive" in log
    assert "lost the session lock" not in log and "lease ran out" not in log


def fail_after(seconds: float) -> Any:
    def reply(messages: Any) -> str:
        time.sleep(seconds)
        raise RuntimeError("model failed")

    return reply


def test_the_heartbeat_stops_when_the_invocation_raises(client: valkey.Valkey) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL, lock_timeout=5), 0, fail_after(0.6))

    with pytest.raises(RuntimeError, match="model failed"):
        agent("hello")

    stopped(client)
    assert not client.keys("*:lock:*")


def test_the_heartbeat_stops_when_the_stream_is_dropped_midway(client: valkey.Valkey) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL, lock_timeout=5), delay=0.6)

    async def read_one_event_and_drop_the_stream() -> None:
        stream = agent.stream_async("hello")
        async for _ in stream:
            await asyncio.sleep(0.5)  # long enough for keep-alives to run
            break
        del stream  # never closed by us: the event loop finalises it

    asyncio.run(read_one_event_and_drop_the_stream())

    stopped(client)
    assert not client.keys("*:lock:*")


def test_the_heartbeat_stops_when_the_invocation_is_cancelled(client: valkey.Valkey) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=TTL, lock_timeout=5), delay=SLOW)

    async def cancel_midway() -> None:
        task = asyncio.create_task(agent.invoke_async("hello"))
        await asyncio.sleep(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())

    stopped(client)
    assert not client.keys("*:lock:*")


def test_one_thread_keeps_every_running_invocation_of_the_process_alive(client: valkey.Valkey) -> None:
    running = threading.Barrier(5)

    def reply(messages: Any) -> str:
        running.wait(30)
        return "done"

    def agent(session: str, agent_id: str) -> Agent:
        manager = ValkeySessionManager(session, client, ttl=TTL)
        return Agent(
            agent_id=agent_id, model=ScriptedModel(reply, delay=1.0), session_manager=manager, callback_handler=None
        )

    agents = [agent("s1", "a"), agent("s1", "b"), agent("s2", "a"), agent("s3", "a")]  # three sessions, four managers
    threads = [threading.Thread(target=each, args=("hello",)) for each in agents]
    for thread in threads:
        thread.start()
    running.wait(30)  # all four are in their model call

    wait_until(lambda: invocation.scheduled() == 4, 5, "every running invocation to wait for its beat")
    assert len(keep_alive_threads()) == 1
    for thread in threads:
        thread.join()
    assert invocation.scheduled() == 0
    assert all(len(ValkeySessionManager(s, client).list_messages(s, "a")) == 2 for s in ("s1", "s2", "s3"))


def test_a_swarm_started_just_before_its_session_expires_keeps_it(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(SESSION, client, ttl=TTL)
    node = Agent(name="node", agent_id="node", model=ScriptedModel(["done"], delay=1.0), callback_handler=None)
    swarm = Swarm([node], session_manager=manager)  # the last write this manager made
    # Idle until the session has less than the first keep-alive's 0.2 s left; a Swarm writes nothing at start.
    wait_until(lambda: 0 < client.pttl(f"session:{SESSION}") < 150, TTL + 1, "the session to be nearly expired")

    assert swarm("task").status.value == "completed"

    assert ValkeySessionManager(SESSION, client).read_multi_agent(SESSION, swarm.id)["status"] == "completed"


def test_without_ttl_or_lock_an_invocation_schedules_no_beat(client: valkey.Valkey) -> None:
    agent = slow_agent(ValkeySessionManager(SESSION, client, ttl=None), delay=0.5)
    thread = threading.Thread(target=agent, args=("hello",))
    thread.start()
    time.sleep(0.3)  # not a wait for a condition: the invocation is in its model call by now
    assert invocation.scheduled() == 0
    thread.join()
