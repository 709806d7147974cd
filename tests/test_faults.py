"""Faults that really happen to a session store, each on its own real server: nothing lost, nothing half-written.

Every test ends by checking that the stored session is consistent (gap-free ids, one key per id) and
that a fresh manager restores exactly what the agent holds in memory (or, where a write could not
happen, exactly that much less).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import valkey
from _reliability import assert_index_consistent, assert_valid_conversation, keyspace, open_agent
from conftest import SERVER_BINARY
from helpers import wait_until
from strands import Agent, tool
from strands.types.exceptions import SessionException
from valkey.backoff import ExponentialBackoff
from valkey.retry import Retry

from strands_valkey_session_manager import ValkeySessionManager, driver
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

SESSION = "user-42"


@pytest.fixture
def start_server() -> Iterator[Callable[..., LocalValkey]]:
    """Start a dedicated server with extra options: ``start_server("--appendonly", "yes")``; stopped by pid."""
    started: list[LocalValkey] = []

    def start(*args: str) -> LocalValkey:
        started.append(LocalValkey(binary=SERVER_BINARY, args=list(args)).start())
        return started[-1]

    yield start
    for local in started:
        local.stop()


def assert_stored_as_held(client: valkey.Valkey, agent: Agent) -> None:
    """The store is consistent and a fresh restore gives exactly the agent's messages: nothing lost or doubled."""
    assert_index_consistent(client, SESSION, agent.agent_id)
    assert open_agent(client, SESSION, agent.agent_id).messages == agent.messages


def in_flight(admin: valkey.Valkey, *commands: str) -> dict[str, Any]:
    """Wait until a client's command (one of ``commands``) is held by CLIENT PAUSE; return its CLIENT LIST entry."""
    found: list[dict[str, Any]] = []
    wait_until(lambda: bool(found.extend(c for c in admin.client_list() if c.get("cmd") in commands) or found))
    return found[0]


# -- Valkey restarted ---------------------------------------------------------------------------


def test_aof_always_restores_every_acknowledged_message_after_a_server_crash(start_server) -> None:
    local = start_server("--appendonly", "yes", "--appendfsync", "always")
    client = local.client()
    agent = open_agent(client, SESSION, replies=[{"tool": "lookup", "input": {"q": "valkey"}}, "found it", "bye"])
    agent("look it up")
    agent("thanks")

    local.kill()  # SIGKILL: only what the AOF holds survives
    local.start()

    assert len(agent.messages) == 6
    assert_stored_as_held(local.client(), agent)


def test_agent_carries_on_with_its_old_client_after_the_server_restarted(start_server) -> None:
    local = start_server("--appendonly", "yes", "--appendfsync", "always")
    client = local.client()
    agent = open_agent(client, SESSION)
    agent("before")

    local.kill()  # the client's pooled connection is now dead, the script cache empty
    local.start()
    agent("after")

    assert len(agent.messages) == 4
    assert_stored_as_held(client, agent)


def test_server_crash_in_the_middle_of_a_turn_loses_only_the_unwritten_message_and_resends_it(start_server) -> None:
    local = start_server("--appendonly", "yes", "--appendfsync", "always")
    client = local.client(socket_connect_timeout=1)

    @tool
    def crash_the_server() -> str:
        """Kill the server between the toolUse and toolResult messages."""
        local.kill()
        return "the server is down"

    agent = open_agent(client, SESSION, replies=[{"tool": "crash_the_server"}, "done"], tools=[crash_the_server])
    with pytest.raises(SessionException) as failure:
        agent("go")
    assert isinstance(failure.value.__cause__, valkey.exceptions.ConnectionError)

    local.start()
    # Every write that returned is there; the toolResult, whose write failed, is not.
    assert open_agent(client, SESSION, "assistant").messages == agent.messages[:-1]
    agent("go on")  # re-sends the toolResult first, in the same atomic write
    assert_stored_as_held(client, agent)


# -- the client's connection killed ------------------------------------------------------------


def test_connection_killed_between_turns_is_replaced_transparently(client: valkey.Valkey) -> None:
    agent = open_agent(client, SESSION)
    agent("one")
    client.client_kill_filter(_type="normal")  # every normal connection, this one included

    agent("two")

    assert_stored_as_held(client, agent)


def test_connection_killed_while_a_tool_runs_is_replaced_transparently(client: valkey.Valkey, server) -> None:
    admin = server.client()

    @tool
    def kill_connections() -> str:
        """Kill the agent's connections between its toolUse and toolResult messages."""
        return f"killed {admin.client_kill_filter(_type='normal', skipme=True)}"

    agent = open_agent(client, SESSION, replies=[{"tool": "kill_connections"}, "done"], tools=[kill_connections])
    agent("go")

    assert len(agent.messages) == 4
    assert_stored_as_held(client, agent)
    admin.close()


def run_turn_while_its_append_is_killed(
    local: LocalValkey, client: valkey.Valkey, agent: Agent
) -> BaseException | None:
    """Run a turn whose first write is held by CLIENT PAUSE, killed in flight, then let the server go on."""
    admin = local.client()
    client.ping()  # the agent's idle pooled connection now shows cmd=ping, not a past write
    admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    outcome: list[BaseException | None] = []

    def turn() -> None:
        try:
            agent("in flight")
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=turn)
    thread.start()
    try:
        admin.client_kill_filter(_id=in_flight(admin, "set", "exec", "fcall", "evalsha")["id"])
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        thread.join(timeout=30)
    assert outcome, "the turn did not finish"
    return outcome[0]


def test_connection_killed_in_flight_raises_session_exception_and_next_turn_resends(start_server) -> None:
    local = start_server()
    client = local.client()
    agent = open_agent(client, SESSION)
    agent("before")

    error = run_turn_while_its_append_is_killed(local, client, agent)

    assert isinstance(error, SessionException)
    assert isinstance(error.__cause__, valkey.exceptions.ConnectionError)
    assert "append message" in str(error) and f"session:{SESSION}:agent:assistant:message:2" in str(error)
    agent("after")  # the killed append is re-sent with this one
    assert [m["content"][0]["text"] for m in agent.messages if m["role"] == "user"] == ["before", "in flight", "after"]
    assert_stored_as_held(client, agent)


def test_connection_killed_in_flight_is_retried_by_the_recommended_retry_policy(start_server) -> None:
    local = start_server()
    client = local.client(
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), 3),
        retry_on_error=[valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError],
    )
    agent = open_agent(client, SESSION)

    error = run_turn_while_its_append_is_killed(local, client, agent)

    assert error is None
    assert len(agent.messages) == 2
    assert_stored_as_held(client, agent)


def test_from_url_retries_a_connection_killed_in_flight_by_default(start_server) -> None:
    local = start_server()
    manager = ValkeySessionManager.from_url(local.url, SESSION)
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)

    error = run_turn_while_its_append_is_killed(local, manager.client, agent)

    assert error is None
    assert len(agent.messages) == 2
    assert_stored_as_held(local.client(), agent)
    manager.close()


def test_a_delete_whose_connection_is_killed_between_its_read_and_its_del_deletes_by_script(
    client: valkey.Valkey, server, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_agent(client, SESSION)("hello")
    logout = ValkeySessionManager(SESSION, client)
    admin = server.client()
    pinned = driver.SyncDriver.pinned

    @asynccontextmanager
    async def killed_after_the_read(*args):
        async with pinned(*args) as send:

            async def send_then_kill(commands):
                replies = await send(commands)
                admin.client_kill_filter(_type="normal", skipme=True)  # this connection among them
                return replies

            yield send_then_kill

    monkeypatch.setattr(driver.SyncDriver, "pinned", killed_after_the_read)
    logout.delete_session(SESSION)

    assert client.keys("*") == []
    admin.close()


# -- the application process killed -------------------------------------------------------------


def converse_until_killed(port: int, tool_started: Any) -> None:
    """Child process: one turn whose tool tells the parent it runs, then hangs until SIGKILL."""

    @tool
    def long_task() -> str:
        """Hang until killed."""
        tool_started.set()
        threading.Event().wait(60)
        return "never returned"

    client = valkey.Valkey(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
    open_agent(client, SESSION, replies=[{"tool": "long_task", "input": {"n": 1}}], tools=[long_task])(
        "start the long task"
    )


def converse_forever(port: int) -> None:
    """Child process: text turns back to back, until SIGKILL lands somewhere inside one."""
    client = valkey.Valkey(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=10)
    agent = open_agent(client, SESSION, replies=[f"reply {turn}" for turn in range(1000)])
    for turn in range(1000):
        agent(f"prompt {turn}")


def test_process_killed_while_a_tool_runs_leaves_a_restorable_conversation(client: valkey.Valkey, server) -> None:
    context = multiprocessing.get_context("spawn")
    tool_started = context.Event()
    child = context.Process(target=converse_until_killed, args=(server.port, tool_started))
    child.start()
    try:
        assert tool_started.wait(timeout=60), "the child never reached its tool"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()

    assert assert_index_consistent(client, SESSION, "assistant") == [0, 1]  # only the in-flight toolResult is missing
    agent = open_agent(client, SESSION, "assistant")
    assert [list(m["content"][0]) for m in agent.messages] == [["text"], ["toolUse"]]
    agent("are you still there?")  # the SDK answers the dangling toolUse when the next prompt arrives
    assert_valid_conversation(agent.messages)
    assert_stored_as_held(client, agent)


def test_process_killed_at_any_moment_leaves_a_gap_free_prefix_of_its_conversation(
    client: valkey.Valkey, server
) -> None:
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=converse_forever, args=(server.port,))
    child.start()
    ids_key = f"session:{SESSION}:agent:assistant:messages"
    try:
        wait_until(lambda: client.zcard(ids_key) >= 50, timeout=60, what="50 stored messages")
    finally:
        os.kill(child.pid, signal.SIGKILL)  # lands wherever the child is: mid-turn, mid-write, between turns
        child.join()

    count = len(assert_index_consistent(client, SESSION, "assistant"))
    stored = ValkeySessionManager(session_id=SESSION, client=client).list_messages(SESSION, "assistant")
    expected = [text for turn in range(count) for text in (f"prompt {turn}", f"reply {turn}")][:count]
    assert [m.message["content"][0]["text"] for m in stored] == expected
    agent = open_agent(client, SESSION)  # holds the SDK's sliding window: the last 40 messages
    agent("resume")
    assert_stored_as_held(client, agent)


# -- out of memory ------------------------------------------------------------------------------


def fill_to_maxmemory(client: valkey.Valkey) -> None:
    """Write filler keys until the server refuses one, then pin maxmemory below what is used, so it stays full."""
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 256_000)
    with pytest.raises(valkey.exceptions.OutOfMemoryError):
        for number in range(1000):
            client.set(f"filler:{number}", "x" * 16_000)
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 64_000)


@pytest.fixture
def full_server(start_server) -> tuple[valkey.Valkey, Agent]:
    """A noeviction server holding a two-message conversation, filled to maxmemory."""
    local = start_server("--maxmemory-policy", "noeviction")
    client = local.client()
    agent = open_agent(client, SESSION, replies=["first reply"])
    agent("first")
    fill_to_maxmemory(client)
    return client, agent


def test_out_of_memory_refuses_the_whole_append_with_a_clear_error(full_server) -> None:
    client, agent = full_server
    before = keyspace(client)

    with pytest.raises(SessionException) as failure:
        agent("second")

    assert "out of memory" in str(failure.value) and "maxmemory" in str(failure.value)
    assert f"session:{SESSION}:agent:assistant:message:2" in str(failure.value)
    assert isinstance(failure.value.__cause__, valkey.exceptions.OutOfMemoryError)
    assert keyspace(client) == before  # the script was refused whole, before it ran


def test_out_of_memory_still_lets_an_agent_be_restored(full_server) -> None:
    client, agent = full_server

    assert open_agent(client, SESSION, "assistant").messages == agent.messages


def test_out_of_memory_still_lets_a_session_be_deleted(full_server) -> None:
    client, _ = full_server
    fillers = {key: value for key, value in keyspace(client).items() if key.startswith("filler:")}

    ValkeySessionManager(session_id=SESSION, client=client).delete_session(SESSION)

    assert keyspace(client) == fillers  # the session is gone, and nothing else


def test_message_refused_for_lack_of_memory_is_stored_with_the_next_turn(full_server) -> None:
    client, agent = full_server
    with pytest.raises(SessionException):
        agent("refused for lack of memory")

    client.config_set("maxmemory", 0)
    agent("memory is back")

    assert [m["content"][0]["text"] for m in agent.messages if m["role"] == "user"] == [
        "first",
        "refused for lack of memory",
        "memory is back",
    ]
    assert_stored_as_held(client, agent)


# -- eviction -----------------------------------------------------------------------------------


def evict(client: valkey.Valkey, raw: valkey.Valkey, victim: str) -> None:
    """Evict ``victim`` and nothing else of the session, under allkeys-lru, by making it the least recently used.

    Fillers are written idle for a week, the victim idle for two, the session's other keys are fresh; with
    maxmemory-samples above the number of keys, the server evicts in exactly that order.
    """
    week = 7 * 24 * 3600
    raw.restore(victim, raw.pttl(victim), raw.dump(victim), replace=True, idletime=2 * week)
    raw.set("filler", "x" * 64_000)
    filler = raw.dump("filler")
    raw.delete("filler")
    keys = set(client.scan_iter())
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 256_000)
    for number in range(100):
        if not client.exists(victim):
            break
        raw.restore(f"filler:{number}", 0, filler, idletime=week)
    client.config_set("maxmemory", 0)
    assert {key for key in keys if not client.exists(key)} == {victim}


@pytest.mark.parametrize("half, victim_id", [("toolResult", 2), ("toolUse", 1)])
def test_evicted_half_of_a_tool_call_is_named_in_a_warning_and_the_restore_is_valid(
    start_server, caplog, half: str, victim_id: int
) -> None:
    local = start_server("--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "64")
    client, raw = local.client(), local.client(decode_responses=False)
    agent = open_agent(client, SESSION, replies=[{"tool": "lookup", "input": {"q": 1}}, "answer", "bye"])
    agent("question")
    agent("thanks")
    assert half in agent.messages[victim_id]["content"][0]

    evict(client, raw, f"session:{SESSION}:agent:assistant:message:{victim_id}")
    with caplog.at_level(logging.WARNING):
        restored = open_agent(client, SESSION, replies=["still here"])

    warnings = [r.getMessage() for r in caplog.records if r.name == "strands_valkey_session_manager.store"]
    assert any(f"message_ids=<[{victim_id}]>" in text for text in warnings), warnings
    assert_valid_conversation(restored.messages)
    restored("and now?")
    assert_valid_conversation(restored.messages)


def test_a_session_whose_record_was_evicted_is_opened_anew_without_any_of_its_remnants(start_server) -> None:
    local = start_server("--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "64")
    client, raw = local.client(), local.client(decode_responses=False)
    open_agent(client, SESSION, replies=["answer"])("question")

    evict(client, raw, f"session:{SESSION}")
    restored = open_agent(client, SESSION, replies=["fresh answer"])  # the record is gone: a new session
    restored("hello again")

    texts = [m["content"][0]["text"] for m in open_agent(client, SESSION).messages]
    assert texts == ["hello again", "fresh answer"]  # nothing of the old conversation mixed into the new one
    assert all(client.ttl(key) > 0 for key in raw.scan_iter(match=f"session:{SESSION}*"))


@pytest.mark.parametrize("victim", [":agent:assistant", ":agent:assistant:messages"])
def test_evicted_agent_or_id_set_makes_the_next_append_refuse_rather_than_overwrite(start_server, victim: str) -> None:
    local = start_server("--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "64")
    client, raw = local.client(), local.client(decode_responses=False)
    open_agent(client, SESSION, replies=["answer"])("question")
    messages_before = {
        key: raw.dump(key) for key in raw.scan_iter(match=f"session:{SESSION}:agent:assistant:message:*")
    }

    evict(client, raw, f"session:{SESSION}{victim}")
    restored = open_agent(client, SESSION)  # the conversation cannot be found any more, so it starts empty
    with pytest.raises(SessionException, match="evicted") as failure:
        restored("hello again")

    assert f"session:{SESSION}:agent:assistant:message:0" in str(failure.value)
    assert {key: raw.dump(key) for key in messages_before} == messages_before  # nothing silently overwritten


# -- a slow server ------------------------------------------------------------------------------


def put_to_sleep(local: LocalValkey, seconds: float) -> socket.socket:
    """Send DEBUG SLEEP on a raw socket, then wait until a PING goes unanswered: the server is asleep."""
    sleeper = socket.create_connection(("127.0.0.1", local.port))
    sleeper.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
    probe = local.client(socket_timeout=0.25)

    def asleep() -> bool:
        try:
            probe.ping()
            return False
        except valkey.exceptions.TimeoutError:
            return True

    wait_until(asleep, what="the server to fall asleep")
    return sleeper


def still_asleep(local: LocalValkey) -> bool:
    try:
        local.client(socket_timeout=0.25).ping()
        return False
    except valkey.exceptions.TimeoutError:
        return True


def test_slow_server_fails_the_call_within_the_socket_timeout_and_the_session_stays_consistent(start_server) -> None:
    local = start_server("--enable-debug-command", "yes")
    client = local.client(socket_timeout=0.5)
    agent = open_agent(client, SESSION)
    agent("before")

    sleeper = put_to_sleep(local, 3)
    with pytest.raises(SessionException) as failure:
        agent("while the server sleeps")
    returned_while_asleep = still_asleep(local)

    assert returned_while_asleep  # failed by the client's timeout, not by waiting for the server
    assert isinstance(failure.value.__cause__, valkey.exceptions.TimeoutError)
    assert "append message failed: TimeoutError" in str(failure.value)
    assert sleeper.recv(16) == b"+OK\r\n"  # the server woke up, and ran the append the client gave up on
    wait_until(lambda: client.zcard(f"session:{SESSION}:agent:assistant:messages") == 3, what="the late append")
    agent("after")  # re-sends it: identical content is recognised as done, not duplicated or refused
    assert_stored_as_held(client, agent)
