"""A session key this library did not write (another application's, 0.1.0's RedisJSON) is never changed.

Neither ``delete_session`` nor a CLI command deletes, overwrites or expires it: a ``SessionException`` (exit
code 4 in the CLI) names the key and what it holds, and the key stays as it was, value and TTL.
A RedisJSON key (type ``ReJSON-RL``) cannot be made without the module: the type check is tested with
another type (a hash), and the message for ``ReJSON-RL`` through ``errors.foreign``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import valkey
from strands.types.exceptions import SessionException

from strands_valkey_session_manager import ValkeySessionManager, errors

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

FLASK_SESSION = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04user\x94\x8c\x03ada\x94s."


def state(client: valkey.Valkey, key: str) -> tuple[bytes | None, int]:
    """The key's serialized value and its remaining life (what must not change)."""
    return client.dump(key), client.pexpiretime(key)


@pytest.fixture
def foreign(raw_client: valkey.Valkey) -> Callable[..., str]:
    """``foreign(kind)``: put another application's value at ``session:websess`` (600 s TTL); returns the key."""

    def put(kind: str = "string") -> str:
        key = "session:websess"
        if kind == "string":  # what Flask-Session stores: a pickled dict
            raw_client.set(key, FLASK_SESSION, ex=600)
        elif kind == "hash":
            raw_client.hset(key, mapping={"user": "ada"})
            raw_client.expire(key, 600)
        else:  # a JSON object that is no session of this library (another id)
            raw_client.set(key, json.dumps({"session_id": "someone-else", "session_type": "AGENT"}), ex=600)
        return key

    return put


@pytest.mark.parametrize(
    ("kind", "holds"), [("string", "not a session record"), ("hash", "type hash"), ("json", "not a session record")]
)
def test_delete_session_refuses_a_foreign_record_and_leaves_it(foreign, raw_client, client, kind, holds) -> None:
    key = foreign(kind)
    before = state(raw_client, key)
    manager = ValkeySessionManager("other", client)

    with pytest.raises(SessionException, match=rf"key=<{key}> \| delete session refused, nothing changed: .*{holds}"):
        manager.delete_session("websess")

    assert state(raw_client, key) == before


def test_cli_delete_refuses_a_foreign_record_with_exit_code_4(cli, foreign, raw_client) -> None:
    key = foreign()
    before = state(raw_client, key)

    result = cli("delete", "websess", "--yes")

    assert result.exit_code == 4
    assert f"key=<{key}>" in result.stderr and "not a session record" in result.stderr
    assert state(raw_client, key) == before


@pytest.mark.parametrize("command", [("expire", "websess", "5"), ("persist", "websess")])
def test_cli_expire_and_persist_refuse_a_foreign_record(cli, foreign, raw_client, command) -> None:
    key = foreign("hash")
    before = state(raw_client, key)

    result = cli(*command)

    assert result.exit_code == 4
    assert f"key=<{key}>" in result.stderr and "type hash" in result.stderr
    assert state(raw_client, key) == before


@pytest.mark.parametrize("command", [("show", "websess"), ("export", "websess")])
def test_cli_show_and_export_refuse_a_foreign_record(cli, foreign, command) -> None:
    key = foreign()

    result = cli(*command)

    assert result.exit_code == 4
    assert f"key=<{key}>" in result.stderr and "not a session record" in result.stderr
    assert "unreadable" not in result.stdout


def test_cli_import_force_refuses_to_replace_a_foreign_record(cli, seed, foreign, raw_client, tmp_path) -> None:
    seed("websess", agents=("solo",))
    exported = tmp_path / "websess.json"
    assert cli("export", "websess", "-o", str(exported)).exit_code == 0
    raw_client.flushall()
    key = foreign()
    before = state(raw_client, key)

    result = cli("import", str(exported), "--force")

    assert result.exit_code == 4
    assert f"key=<{key}>" in result.stderr
    assert raw_client.keys("*") == [key.encode()] and state(raw_client, key) == before


def test_a_redisjson_key_of_0_1_0_is_explained_with_what_to_do() -> None:
    message = errors.foreign("delete session", "session:user-42", errors.REDISJSON_TYPE)

    assert "key=<session:user-42>" in message and "ReJSON-RL" in message
    assert "strands-valkey-session-manager 0.1.0" in message and "does not read it" in message
    assert "Delete the key" in message and "keep 0.1.0" in message and "key_prefix" in message


def test_an_agent_update_never_writes_over_a_foreign_agent_record_not_even_for_a_moment(
    client: valkey.Valkey, raw_client: valkey.Valkey, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client))
    agent("hello")  # the manager knows the agent and the session's deadline: its next sync is as cheap as it gets
    key = "session:s:agent:assistant"
    raw_client.set(key, FLASK_SESSION, keepttl=True)  # another application's value, where the agent record was
    before = state(raw_client, key)
    client.config_set("notify-keyspace-events", "KA")
    events = client.pubsub()
    events.psubscribe("__keyspace@0__:*")
    events.get_message(timeout=5)  # the subscription's confirmation
    try:
        agent.state.set("stage", "draft")
        with pytest.raises(SessionException, match="is not a JSON object"):
            agent._session_manager.sync_agent(agent)
        client.set("sentinel", "1")  # events arrive in order: all of the sync's are in before this one
        seen = []
        while not seen or seen[-1] != "__keyspace@0__:sentinel":
            message = events.get_message(timeout=5)
            assert message is not None, "the sentinel's event never came"
            seen.append(message["channel"])
    finally:
        events.close()
        client.config_set("notify-keyspace-events", "")
    assert f"__keyspace@0__:{key}" not in seen  # no SET, no EXPIRE, nothing touched it
    assert state(raw_client, key) == before
