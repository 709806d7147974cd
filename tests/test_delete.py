"""delete_session: every key of that session, in one call, and no key of any other session."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from contextlib import asynccontextmanager

import pytest
import valkey
from helpers import wait_until
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager, driver

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

NEIGHBOURS = ["user-4", "user-420", "user-42x", "xuser-42"]


def populate_session(client: valkey.Valkey, make_agent, session_id: str) -> None:
    for agent_id in ("researcher", "writer"):
        make_agent(ValkeySessionManager(session_id=session_id, client=client), agent_id=agent_id)(f"hi {session_id}")


def snapshot(client: valkey.Valkey) -> dict[str, tuple[bytes, int]]:
    return {key: (client.dump(key), client.pexpiretime(key)) for key in client.keys("*")}


def test_delete_session_removes_every_key_of_the_session(client: valkey.Valkey, make_agent) -> None:
    populate_session(client, make_agent, "user-42")
    ValkeySessionManager(session_id="user-42", client=client).delete_session("user-42")
    assert client.keys("*") == []


def test_delete_session_leaves_prefix_neighbours_untouched(client: valkey.Valkey, make_agent) -> None:
    for session_id in NEIGHBOURS:
        populate_session(client, make_agent, session_id)
    populate_session(client, make_agent, "user-42")
    logout = ValkeySessionManager(session_id="user-4", client=client)
    untouched = {
        key: value
        for key, value in snapshot(client).items()
        if key != "session:user-42" and not key.startswith("session:user-42:")
    }

    logout.delete_session("user-42")

    assert snapshot(client) == untouched


def test_deleting_an_unknown_session_raises(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(session_id="user-1", client=client)
    with pytest.raises(SessionException, match="Session user-42 does not exist"):
        manager.delete_session("user-42")


def test_an_agent_whose_session_was_deleted_cannot_write_orphan_keys(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager(session_id="user-42", client=client)
    agent = make_agent(manager)
    agent("hi")
    manager.delete_session("user-42")

    with pytest.raises(SessionException, match="no longer exists"):
        agent("still there?")
    assert client.keys("*") == []


def test_an_agent_whose_session_another_process_deleted_takes_back_its_append(
    client: valkey.Valkey, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager(session_id="user-42", client=client))
    agent("hi")  # its next message is a plain MULTI/EXEC: it writes, then finds the session gone
    ValkeySessionManager(session_id="user-42", client=client).delete_session("user-42")

    with pytest.raises(SessionException, match="no longer exists"):
        agent._session_manager.append_message({"role": "user", "content": [{"text": "still there?"}]}, agent)
    assert client.keys("*") == []


def test_delete_session_with_thousands_of_messages_is_complete(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="big", client=client))
    manager = agent._session_manager
    for i in range(2500):
        manager.append_message({"role": "user", "content": [{"text": str(i)}]}, agent)
    assert client.dbsize() == 2504

    manager.delete_session("big")

    assert client.dbsize() == 0


@pytest.mark.parametrize("write", ["a message", "an agent", "the session anew"])
def test_keys_written_while_a_delete_reads_the_session_are_deleted_too(
    client: valkey.Valkey, make_agent, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    writer = make_agent(ValkeySessionManager(session_id="s", client=client))
    writer("hello")
    deleting = ValkeySessionManager(session_id="s", client=client)
    pinned = driver.SyncDriver.pinned
    written: list[str] = []

    @asynccontextmanager
    async def read_then_write(*args):  # another process writes between the delete's read and its MULTI/EXEC
        async with pinned(*args) as send:

            async def send_then_write(commands):
                replies = await send(commands)
                if not written:
                    written.append(write)
                    if write == "a message":
                        writer._session_manager.append_message({"role": "user", "content": [{"text": "late"}]}, writer)
                    elif write == "an agent":
                        make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="late")("hi")
                    else:  # deleted and created again: other members, other ids, another record
                        ValkeySessionManager(session_id="s", client=client).delete_session("s")
                        make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="late")("hi")
                return replies

            yield send_then_write

    monkeypatch.setattr(driver.SyncDriver, "pinned", read_then_write)
    deleting.delete_session("s")

    assert client.keys("*") == []


def test_delete_session_succeeds_while_other_agents_keep_writing(client: valkey.Valkey, make_agent) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(agent_id: str) -> None:  # another process's agent, talking as fast as it can until its session goes
        while not stop.is_set():
            try:
                agent = make_agent(ValkeySessionManager(session_id="s", client=client), agent_id=agent_id)
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    agent._session_manager.append_message({"role": "user", "content": [{"text": str(n)}]}, agent)
            except SessionException:
                continue
            except BaseException as error:  # noqa: BLE001  (reported below)
                failures.append(error)
                return

    make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="main")("hello")
    writers = [threading.Thread(target=write, args=(f"writer-{n}",)) for n in range(3)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(30):
            # wait until the writers have written into this incarnation of the session, then log out
            wait_until(lambda: len(client.smembers("session:s:index")) >= 3, what="writers in the session")
            ValkeySessionManager(session_id="s", client=client).delete_session("s")
            login = make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="main")
            assert login.messages == []  # nothing of the session logged out comes back
            login("login")
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert failures == []
    ValkeySessionManager(session_id="s", client=client).delete_session("s")
    assert client.keys("*") == []


def test_a_delete_killed_between_the_record_and_the_rest_leaves_nothing_a_new_login_sees(
    server, client: valkey.Valkey, make_agent
) -> None:
    populate_session(client, make_agent, "s")
    child = textwrap.dedent(
        f"""
        import os
        import valkey
        from strands_valkey_session_manager import ValkeySessionManager, errors, scripts

        manager = ValkeySessionManager("s", valkey.Valkey(port={server.port}))
        run = manager.store.script
        async def outrun_then_killed(io, script, session_id, own, args, *rest, **kwargs):
            if script is scripts.DELETE_SESSION and args[0] == "":
                raise errors.SessionChanging("writers outran the walk")  # as busy writers make it
            if script is scripts.DELETE_SESSION and args[0] == "remnants":
                os._exit(9)  # the record is gone; the process dies before the rest
            return await run(io, script, session_id, own, args, *rest, **kwargs)
        async def by_script(*args):
            return None  # the script's way, as under load
        manager.store.script = outrun_then_killed
        manager.store._delete_watched = by_script
        manager.delete_session("s")
        """
    )
    killed = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    assert not client.exists("session:user-42") and not client.exists("session:s") and client.keys("session:s:*")

    login = make_agent(ValkeySessionManager(session_id="s", client=client), agent_id="researcher")

    assert login.messages == []
    assert client.keys("session:s:agent:writer*") == []  # the remnants went before the new session was created
