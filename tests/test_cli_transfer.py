"""``strands-valkey export`` and ``import``: whole sessions out and back, byte for byte, TTLs included."""

from __future__ import annotations

import json
from typing import Any

import pytest
import valkey
from helpers import add_messages
from strands import Agent

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.cli.store import Store
from strands_valkey_session_manager.cli.transfer import FORMAT
from strands_valkey_session_manager.keys import KeySchema
from strands_valkey_session_manager.testing.model import ScriptedModel


def snapshot(raw: valkey.Valkey, session_id: str) -> dict[bytes, tuple[str, Any, int]]:
    """Every key of the session (found here by pattern, independently of the code under test)."""
    keys = [*raw.keys(f"session:{session_id}"), *raw.keys(f"session:{session_id}:*")]
    state = {}
    for key in keys:
        kind = raw.type(key).decode()
        if kind == "string":
            value: Any = raw.get(key)
        elif kind == "set":
            value = sorted(raw.smembers(key))
        else:
            value = raw.zrange(key, 0, -1, withscores=True)
        state[key] = (kind, value, raw.pttl(key))
    return state


def assert_same_session(before: dict, after: dict, ttl_tolerance_ms: int = 5000) -> None:
    assert {key: value[:2] for key, value in after.items()} == {key: value[:2] for key, value in before.items()}
    for key, (_, _, pttl) in after.items():
        assert before[key][2] - ttl_tolerance_ms <= pttl <= before[key][2], (key, before[key][2], pttl)


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_export_delete_import_gives_back_the_identical_session(cli, seed, raw_client, tmp_path) -> None:
    seed("user-42", swarm=True)
    before = snapshot(raw_client, "user-42")
    assert b"session:user-42:multi_agent:default_swarm" in before
    path = tmp_path / "user-42.json"

    assert cli("export", "user-42", "-o", str(path)).exit_code == 0
    assert cli("delete", "user-42", "--yes").exit_code == 0
    assert snapshot(raw_client, "user-42") == {}
    result = cli("import", str(path))

    assert result.exit_code == 0, result.stderr
    assert_same_session(before, snapshot(raw_client, "user-42"))


def test_export_and_import_count_records_and_messages_alike(cli, seed, tmp_path) -> None:
    seed("user-42")  # the session record, 2 agent records, 6 messages each
    path = tmp_path / "out.json"

    exported = cli("export", "user-42", "-o", str(path))
    cli("delete", "user-42", "--yes")
    imported = cli("import", str(path))

    assert "exported 1 session (3 records, 12 messages) to" in exported.stderr
    assert "imported 1 session (3 records, 12 messages)," in imported.stderr


def test_values_this_library_did_not_write_come_back_byte_for_byte(cli, seed, raw_client, tmp_path) -> None:
    seed("user-42", agents=("solo",))
    raw_client.set("session:user-42:agent:solo:message:1", b'{"spaced" : true}', keepttl=True)
    raw_client.set("session:user-42:agent:solo:message:2", b"\xff\xfe not UTF-8 \xed\xa0\x80", keepttl=True)
    raw_client.set("session:user-42:agent:solo:message:3", '{"text":"caf\u00e9 \\ud800"}'.encode(), keepttl=True)
    before = snapshot(raw_client, "user-42")
    path = tmp_path / "out.json"

    cli("export", "user-42", "-o", str(path))
    cli("delete", "user-42", "--yes")
    cli("import", str(path))

    assert_same_session(before, snapshot(raw_client, "user-42"))


def test_an_imported_session_restores_into_an_agent(cli, seed, client, tmp_path) -> None:
    seed("user-42", agents=("solo",))
    original = Agent(
        agent_id="solo",
        model=ScriptedModel(),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="user-42", client=client),
    ).messages
    path = tmp_path / "out.json"
    cli("export", "user-42", "-o", str(path))
    cli("delete", "user-42", "--yes")

    cli("import", str(path))

    restored = Agent(
        agent_id="solo",
        model=ScriptedModel(),
        callback_handler=None,
        session_manager=ValkeySessionManager(session_id="user-42", client=client),
    )
    assert restored.messages == original
    assert restored.state.get("stage") == "draft"


def test_an_import_gives_every_key_one_deadline_however_many_keys_it_writes(cli, seed, client, tmp_path) -> None:
    seed("user-42", agents=("solo",))
    add_messages(client, 3000, "user-42", "solo")  # several milliseconds of the server's time to write
    path = tmp_path / "out.json"
    cli("export", "user-42", "-o", str(path))
    cli("delete", "user-42", "--yes")

    assert cli("import", str(path)).exit_code == 0

    keys = [*client.keys("session:user-42"), *client.keys("session:user-42:*")]
    assert len(keys) == 3010 and len({client.pexpiretime(key) for key in keys}) == 1


def test_a_session_without_expiry_is_imported_without_expiry(cli, seed, client, tmp_path) -> None:
    seed("forever", ttl=None, agents=("solo",))
    path = tmp_path / "out.json"
    cli("export", "forever", "-o", str(path))
    cli("delete", "forever", "--yes")

    cli("import", str(path))

    keys = client.keys("session:forever*")
    assert len(keys) == 10 and all(client.ttl(key) == -1 for key in keys)


def test_import_refuses_an_existing_session_without_force_and_writes_nothing(cli, seed, raw_client, tmp_path) -> None:
    seed("user-1", agents=("solo",))
    seed("user-2", agents=("solo",))
    path = tmp_path / "out.json"
    cli("export", "user-1", "user-2", "-o", str(path))
    cli("delete", "user-1", "--yes")
    before = snapshot(raw_client, "user-2")

    result = cli("import", str(path))

    assert result.exit_code == 4
    assert "session user-2 exists; nothing imported" in result.stderr
    assert snapshot(raw_client, "user-1") == {}
    assert_same_session(before, snapshot(raw_client, "user-2"))


def test_import_force_replaces_every_key_of_the_existing_session(cli, seed, raw_client, client, tmp_path) -> None:
    seed("user-42", agents=("solo",))
    before = snapshot(raw_client, "user-42")
    path = tmp_path / "out.json"
    cli("export", "user-42", "-o", str(path))
    seed("user-42", agents=("late",))  # an agent that is not in the file

    result = cli("import", str(path), "--force")

    assert result.exit_code == 0, result.stderr
    assert_same_session(before, snapshot(raw_client, "user-42"))


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_export_to_stdout_pipes_into_import_from_stdin(cli, seed, raw_client) -> None:
    seed("user-42", agents=("solo",))
    before = snapshot(raw_client, "user-42")
    exported = cli("export", "user-42")
    document = json.loads(exported.stdout)
    cli("delete", "user-42", "--yes")

    result = cli("import", "-", input=exported.stdout)

    assert result.exit_code == 0, result.stderr
    assert (document["format"], document["version"]) == (FORMAT, 1)
    assert 3590_000 <= document["sessions"][0]["ttl_ms"] <= 3600_000
    assert_same_session(before, snapshot(raw_client, "user-42"))


def test_export_match_exports_every_matching_session(cli, seed) -> None:
    for session_id in ("user-1", "user-2", "admin"):
        seed(session_id, agents=("solo",))

    document = json.loads(cli("export", "--match", "user-*").stdout)

    assert sorted(entry["session_id"] for entry in document["sessions"]) == ["user-1", "user-2"]


def test_export_of_an_unknown_session_exits_1_and_writes_no_file(cli, seed, tmp_path) -> None:
    seed("user-42", agents=("solo",))
    path = tmp_path / "out.json"

    result = cli("export", "user-42", "nobody", "-o", str(path))

    assert result.exit_code == 1
    assert "no session nobody" in result.stderr
    assert not path.exists()


def test_import_of_a_file_that_is_no_export_is_a_usage_error(cli, tmp_path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else", "version": 1, "sessions": []}))

    result = cli("import", str(path))

    assert result.exit_code == 2
    assert "not a session export" in result.stderr


def test_import_of_a_newer_format_version_says_so(cli, tmp_path) -> None:
    path = tmp_path / "new.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 2, "sessions": []}))

    result = cli("import", str(path))

    assert result.exit_code == 2
    assert "version 2 is not supported" in result.stderr


def test_import_of_a_missing_file_exits_1(cli, tmp_path) -> None:
    assert cli("import", str(tmp_path / "nope.json")).exit_code == 1


def test_a_standalone_export_imports_into_the_cluster_key_layout(seed, raw_client) -> None:
    seed("user-42", agents=("solo",))
    plain, tagged = Store.of(raw_client), Store(raw_client, KeySchema(cluster=True))
    dump = plain.dump("user-42")

    tagged.restore(dump)

    copy = tagged.dump("user-42")
    assert (copy.record, copy.agents, copy.multi_agents) == (dump.record, dump.agents, dump.multi_agents)
    assert raw_client.zrange("session:{user-42}:agent:solo:messages", 0, -1) == [str(i).encode() for i in range(6)]
    assert list(raw_client.smembers("session:{user-42}:index")) == [b"agent:solo"]
