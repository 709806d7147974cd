"""The plain-command writes (a MULTI/EXEC append, no script) keep every promise the scripts keep.

Each test is a way production breaks things (docs/architecture.md, "What the plain-command writes rely on"): a
host clock stepped back, a logout and login under the same id while another process writes, an id set evicted,
a process killed between an append's block and its settle, a delete under load. They run on real servers;
the clock is stepped in-process, the kill is a real process's.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import valkey
from conftest import SERVER_BINARY
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def say(manager: ValkeySessionManager, agent: Any, text: str) -> None:
    manager.append_message({"role": "user", "content": [{"text": text}]}, agent)


def texts(agent: Any) -> list[str]:
    return [message["content"][0]["text"] for message in agent.messages]


def reachable(client: valkey.Valkey, session_id: str) -> set[str]:
    """Every key a walk of the session from its record reaches (what delete_session and a refresh reach)."""
    record = f"session:{session_id}"
    if not client.exists(record):
        return set()
    found = {record, f"{record}:index"}
    for suffix in client.smembers(f"{record}:index"):
        found |= {f"{record}:{suffix}", f"{record}:lock:{suffix}"}
        if suffix.startswith("agent:"):
            ids = f"{record}:{suffix}:messages"
            found |= {ids, *(f"{record}:{suffix}:message:{n}" for n in client.zrange(ids, 0, -1))}
    return found


def assert_whole(client: valkey.Valkey, session_id: str, ttl: bool) -> None:
    """Every key of the session is reachable from its record, and has a TTL if the session has one."""
    keys = set(client.keys(f"session:{session_id}*"))
    assert keys <= reachable(client, session_id), f"orphans: {sorted(keys - reachable(client, session_id))}"
    if ttl:
        assert [key for key in keys if client.pttl(key) < 0] == []


# -- a host clock stepped back ------------------------------------------------------------------


@pytest.mark.parametrize("step", [2, 1800])
def test_a_host_clock_stepped_back_keeps_every_write_at_least_nine_tenths_of_ttl_ahead(
    client: valkey.Valkey, make_agent, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=2))
    manager = agent._session_manager
    say(manager, agent, "before the step")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - step)  # an NTP step, a VM migrated

    said = ["before the step"]
    for turn in range(12):  # 3 s of writes: longer than the ttl
        said.append(f"turn {turn}")
        say(manager, agent, said[-1])
        written = time.monotonic()
        left = min(client.pttl(key) for key in client.keys("session:s*"))
        assert left >= 1800 - (time.monotonic() - written) * 1000 - 5, (turn, left)
        time.sleep(0.25)  # the pace of a conversation, not a wait for a condition

    assert texts(make_agent(ValkeySessionManager(session_id="s", client=client, ttl=2))) == said


def test_a_message_written_with_a_deadline_that_had_passed_is_kept(
    client: valkey.Valkey, make_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    stepped = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=60), agent_id="stepped")
    say(stepped._session_manager, stepped, "one")
    other = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=60), agent_id="other")
    other("keeps the session alive")
    # The session's deadline moves on (the other agent's writes), while the stepped manager holds a deadline
    # that has passed and a clock that says it is not due: what a host clock stepped back made of it before
    # elapsed time was monotonic. Its next plain append writes the message PXAT that past deadline.
    manager = stepped._session_manager
    past = int(real_ms(client)) - 1000
    manager.store.deadline, manager.store.clock_ms = past, past - 60_000 - time.monotonic() * 1000

    say(stepped._session_manager, stepped, "two")

    restored = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=60), agent_id="stepped")
    assert texts(restored) == ["one", "two"]
    assert_whole(client, "s", ttl=True)


def real_ms(client: valkey.Valkey) -> float:
    seconds, micros = client.time()
    return seconds * 1000 + micros / 1000


# -- logout and login under the same id while another process writes ----------------------------


@pytest.mark.parametrize("ttl", [None, 60])
def test_logout_and_login_while_another_process_writes_leaves_no_orphan_and_no_key_without_ttl(
    client: valkey.Valkey, make_agent, ttl: int | None
) -> None:
    stop = threading.Event()
    acknowledged: list[tuple[str, str]] = []

    def write() -> None:  # another process: one agent talking, opening the session again when it is gone
        while not stop.is_set():
            try:
                agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=ttl), agent_id="talker")
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    say(agent._session_manager, agent, f"{n}")
                    acknowledged.append((agent._session_manager.session.created_at, f"{n}"))
            except SessionException:
                continue

    writer = threading.Thread(target=write)
    make_agent(ValkeySessionManager(session_id="s", client=client, ttl=ttl), agent_id="main")("hello")
    writer.start()
    try:
        for _ in range(100):
            ValkeySessionManager(session_id="s", client=client, ttl=ttl).delete_session("s")  # logout
            login = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=ttl), agent_id="main")
            assert login.messages == []  # nothing of the session logged out comes back
            login("login")
    finally:
        stop.set()
        writer.join()

    assert acknowledged, "the writer never wrote"
    assert_whole(client, "s", ttl=ttl is not None)
    ValkeySessionManager(session_id="s", client=client, ttl=ttl).delete_session("s")
    assert client.keys("*") == []


def test_a_process_killed_between_an_append_and_its_settle_leaves_nothing_a_new_login_sees(
    server: LocalValkey, client: valkey.Valkey, make_agent
) -> None:
    child = textwrap.dedent(
        f"""
        import os
        import valkey
        from strands import Agent
        from strands_valkey_session_manager import ValkeySessionManager, scripts
        from strands_valkey_session_manager.testing.model import ScriptedModel

        client = valkey.Valkey(port={server.port})
        manager = ValkeySessionManager("s", client, ttl=60)
        agent = Agent(agent_id="talker", model=ScriptedModel(["ok"]), session_manager=manager, callback_handler=None)
        agent("old text")  # its next append is a plain block
        ValkeySessionManager("s", client).delete_session("s")  # another process logs the user out
        run = manager.store.script
        async def killed_before_the_settle(io, script, *args, **kwargs):
            if script is scripts.SETTLE_APPEND:
                os._exit(9)  # the block ran; the process dies before its settle is sent
            return await run(io, script, *args, **kwargs)
        manager.store.script = killed_before_the_settle
        manager.append_message({{"role": "user", "content": [{{"text": "written after the logout"}}]}}, agent)
        """
    )
    killed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    left = client.keys("session:s*")
    assert left and all(client.pttl(key) > 0 for key in left)  # what the block wrote expires with the old deadline

    login = make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="talker", replies=["new"])
    assert login.messages == []  # the old conversation does not come back
    login("new text")

    assert texts(make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="talker")) == [
        "new text",
        "new",
    ]
    ValkeySessionManager(session_id="s", client=client).delete_session("s")
    assert client.keys("*") == []


# -- eviction of an id set ----------------------------------------------------------------------


def test_an_id_set_deleted_under_a_live_agent_comes_back_with_the_sessions_deadline(
    client: valkey.Valkey, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=60))
    agent("one")
    client.delete("session:s:agent:assistant:messages")  # evicted, or deleted by hand

    say(agent._session_manager, agent, "two")

    # Its earlier ids are gone with it (eviction loses data; the scripts lose the same), but every key the append
    # wrote or re-created shares the session's deadline, and the agent is in the index.
    deadline = client.pexpiretime("session:s")
    assert {key: client.pexpiretime(key) for key in client.keys("session:s*")} == dict.fromkeys(
        client.keys("session:s*"), deadline
    )
    assert client.zrange("session:s:agent:assistant:messages", 0, -1) == ["2"]
    assert set(client.smembers("session:s:index")) == {"agent:assistant"}


def test_an_id_set_evicted_under_volatile_lru_comes_back_with_the_sessions_deadline(make_agent) -> None:
    with LocalValkey(
        binary=SERVER_BINARY, args=["--maxmemory-policy", "volatile-lru", "--maxmemory-samples", "64"]
    ) as local:
        client = local.client()
        agent = make_agent(ValkeySessionManager(session_id="s", client=client, ttl=600))
        agent("one")
        ids = "session:s:agent:assistant:messages"
        week = 7 * 24 * 3600
        raw = local.client(decode_responses=False)
        raw.restore(ids, raw.pttl(ids), raw.dump(ids), replace=True, idletime=2 * week)  # the least recently used
        raw.set("filler", "x" * 10_000)
        filler = raw.dump("filler")
        raw.delete("filler")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 100_000)
        number = 0
        while client.exists(ids):  # volatile keys of another application, idle a week, push it out (then each other)
            raw.restore(f"filler:{number}", 3_600_000, filler, idletime=week)
            number += 1
            assert number < 1000, "the id set was never evicted"
        client.config_set("maxmemory", 0)
        assert client.exists("session:s", "session:s:index", "session:s:agent:assistant") == 3  # only the id set

        say(agent._session_manager, agent, "two")

        assert client.exists(ids) and client.pexpiretime(ids) == client.pexpiretime("session:s")
