"""Errors (CONTRACT.md): storage failures and foreign values are SessionExceptions naming the key."""

from __future__ import annotations

import logging
import socket
import threading

import pytest
import valkey
from strands import Agent
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def conversation(client: valkey.Valkey, make_agent, turns: int = 2) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client))
    for turn in range(turns):
        agent(f"turn {turn}")


def test_a_vanished_message_is_logged_by_id_and_the_rest_restored(client: valkey.Valkey, make_agent, caplog) -> None:
    conversation(client, make_agent)
    client.delete("session:s:agent:assistant:message:1")

    with caplog.at_level(logging.WARNING):
        restored = make_agent(ValkeySessionManager(session_id="s", client=client))

    assert "message_ids=<[1]>" in caplog.text
    assert len(restored.messages) == 3


def test_a_message_replaced_by_another_type_counts_as_vanished(client: valkey.Valkey, make_agent, caplog) -> None:
    conversation(client, make_agent)
    client.delete("session:s:agent:assistant:message:2")
    client.rpush("session:s:agent:assistant:message:2", "not a message")

    with caplog.at_level(logging.WARNING):
        restored = make_agent(ValkeySessionManager(session_id="s", client=client))

    assert "message_ids=<[2]>" in caplog.text
    assert len(restored.messages) == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session:s", "{not json"),
        ("session:s:agent:assistant", "[1, 2]"),
        ("session:s:agent:assistant", '{"agent_id": "assistant"}'),
        ("session:s:agent:assistant:message:1", '{"message": "hi", "message_id": 1}'),
        ("session:s:agent:assistant:message:1", "\xff garbage"),
    ],
    ids=["session-bad-json", "agent-not-an-object", "agent-missing-fields", "message-wrong-shape", "message-garbage"],
)
def test_a_foreign_value_fails_the_restore_naming_its_key(
    client: valkey.Valkey, make_agent, key: str, value: str
) -> None:
    conversation(client, make_agent)
    client.set(key, value, keepttl=True)

    with pytest.raises(SessionException, match=f"key=<{key}> \\| value is"):
        make_agent(ValkeySessionManager(session_id="s", client=client))


@pytest.mark.parametrize("key", ["session:s:agent:assistant", "session:s:index", "session:s:agent:assistant:messages"])
def test_a_key_of_the_wrong_type_fails_the_write_naming_it_and_changes_nothing(
    client: valkey.Valkey, make_agent, key: str
) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    agent = make_agent(manager)
    agent("hi")
    client.delete(key)
    client.hset(key, "foreign", "value")
    before = {k: client.dump(k) for k in client.keys("*")}

    with pytest.raises(SessionException, match=f"key=<{key}>"):
        if key.endswith(":assistant"):
            agent.state.set("x", 1)
            manager.sync_agent(agent)
        elif key.endswith(":index"):  # written when an agent joins the session (an append of a known one skips it)
            make_agent(manager, agent_id="another")
        else:
            manager.append_message({"role": "user", "content": [{"text": "more"}]}, agent)

    assert {k: client.dump(k) for k in client.keys("*")} == before


def test_an_agent_record_this_library_did_not_write_is_left_as_it_was_by_a_sync(
    client: valkey.Valkey, make_agent
) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    agent = make_agent(manager)
    agent("hi")
    client.set("session:s:agent:assistant", "not an agent", keepttl=True)
    before = (client.get("session:s:agent:assistant"), client.pexpiretime("session:s:agent:assistant"))

    agent.state.set("x", 1)
    with pytest.raises(SessionException, match="key=<session:s:agent:assistant>.*not a JSON object"):
        manager.sync_agent(agent)
    assert (client.get("session:s:agent:assistant"), client.pexpiretime("session:s:agent:assistant")) == before


def test_an_agent_record_that_is_not_utf8_is_left_as_it_was_by_a_sync(
    client: valkey.Valkey, raw_client: valkey.Valkey, make_agent
) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    agent = make_agent(manager)
    agent("hi")
    raw_client.set("session:s:agent:assistant", b"\xff\xfe not text", keepttl=True)

    agent.state.set("x", 1)
    with pytest.raises(SessionException, match="key=<session:s:agent:assistant>"):
        manager.sync_agent(agent)
    assert raw_client.get("session:s:agent:assistant") == b"\xff\xfe not text"


def test_a_multi_agent_value_that_is_not_json_raises_naming_its_key(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    client.set("session:s:multi_agent:swarm", "nope")
    with pytest.raises(SessionException, match="key=<session:s:multi_agent:swarm>"):
        manager.read_multi_agent("s", "swarm")


def test_an_unreachable_server_raises_session_exception_with_the_cause() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = valkey.Valkey(port=port, socket_connect_timeout=1)
        with pytest.raises(SessionException, match="ConnectionError") as raised:
            ValkeySessionManager(session_id="s", client=client)
    assert isinstance(raised.value.__cause__, valkey.ConnectionError)


def test_a_server_that_never_answers_fails_within_the_clients_timeout(client_kind: str) -> None:
    # GLIDE's connection is made (its handshake answered) before any command: a server that never answers it is a
    # connection that could not be made, as for an unreachable server.
    expected = valkey.ConnectionError if client_kind.startswith("glide") else valkey.TimeoutError
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections (kernel backlog) but never replies
        client = valkey.Valkey(port=listener.getsockname()[1], socket_timeout=0.5, socket_connect_timeout=0.5)
        with pytest.raises(SessionException, match=expected.__name__) as raised:
            ValkeySessionManager(session_id="s", client=client)
    assert type(raised.value.__cause__) is expected


def test_session_exception_names_the_operation(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager(session_id="s", client=client)
    client.set("session:s:index", "not a set")
    from strands.types.session import SessionAgent

    with pytest.raises(SessionException, match=r"key=<session:s:index> \| create agent failed"):
        manager.create_agent("s", SessionAgent(agent_id="a", state={}, conversation_manager_state={}))


@pytest.mark.sync_client_only  # the pool held here is the synchronous client's
def test_an_exhausted_connection_pool_is_named_with_what_to_do(server: LocalValkey, client: valkey.Valkey) -> None:
    pool = valkey.ConnectionPool(port=server.port, max_connections=1, decode_responses=True)
    manager = ValkeySessionManager(session_id="s", client=valkey.Valkey(connection_pool=pool))
    held = pool.get_connection("PING")  # a slow call on another thread holds the pool's only connection
    failures: list[str] = []

    def worker() -> None:
        try:
            manager.read_agent("s", "assistant")
        except SessionException as error:
            failures.append(str(error))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.release(held)

    assert len(failures) == 16
    for failure in failures:
        assert "connection pool is exhausted" in failure and "the server was not asked" in failure
        assert "BlockingConnectionPool" in failure and "max_connections" in failure
        assert "Check that Valkey is reachable" not in failure


@pytest.mark.sync_client_only  # it shares the synchronous client's pool
def test_sixteen_threads_share_one_connection_through_a_blocking_pool(
    server: LocalValkey, client: valkey.Valkey, make_agent
) -> None:
    pool = valkey.BlockingConnectionPool(port=server.port, max_connections=1, timeout=30, decode_responses=True)
    shared = valkey.Valkey(connection_pool=pool)
    agents = [make_agent(ValkeySessionManager(session_id="s", client=shared), f"agent-{n}") for n in range(16)]
    threads = [threading.Thread(target=agent, args=("hello",)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    reader = ValkeySessionManager(session_id="s", client=client)
    assert all(len(reader.list_messages("s", f"agent-{n}")) == 2 for n in range(16))


#: Each read path, the key it reads, and how to put a value that is not UTF-8 there.
NOT_UTF8_READS = {
    "read_session": ("session:s", lambda m: m.read_session("s")),
    "read_agent": ("session:s:agent:assistant", lambda m: m.read_agent("s", "assistant")),
    "restore": ("session:s:agent:assistant", lambda m: Agent(agent_id="assistant", session_manager=m)),
    "read_message": ("session:s:agent:assistant:message:1", lambda m: m.read_message("s", "assistant", 1)),
    "list_messages": ("session:s:agent:assistant:message:1", lambda m: m.list_messages("s", "assistant")),
    "list_messages-ids": ("session:s:agent:assistant:messages", lambda m: m.list_messages("s", "assistant")),
    "read_multi_agent": ("session:s:multi_agent:swarm", lambda m: m.read_multi_agent("s", "swarm")),
}


@pytest.mark.parametrize("decode", [True, False], ids=["decode_responses", "bytes"])
@pytest.mark.parametrize("path", NOT_UTF8_READS)
def test_a_value_that_is_not_utf8_is_a_session_exception_naming_its_key(
    server: LocalValkey, raw_client: valkey.Valkey, make_agent, path: str, decode: bool
) -> None:
    reader = server.client(decode_responses=decode)
    conversation(reader, make_agent)
    manager = ValkeySessionManager(session_id="s", client=reader)
    key, read = NOT_UTF8_READS[path]
    if key.endswith(":messages"):
        raw_client.zadd(key, {b"\xff\xfe": 5})
    else:
        raw_client.set(key, b"\xff\xfe not UTF-8", keepttl=True)

    with pytest.raises(SessionException, match=f"key=<{key}>"):
        read(manager)

    assert reader.ping()  # the client goes on working
