"""The CLI with encrypted and compressed sessions: show, export, import (--raw), rekey; the keyring never on argv."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import valkey
import valkey.asyncio
from strands import Agent
from strands.session import SnapshotSessionManager
from valkey.client import NEVER_DECODE

from strands_valkey_session_manager import Keyring, ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.cli import sealed, tail
from strands_valkey_session_manager.cli.output import Output
from strands_valkey_session_manager.cli.store import Store
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.values import Values

MARKER = "purple-giraffe-4711"
OLD, NEW = os.urandom(32), os.urandom(32)
RING = Keyring({"2026-06": OLD}, current="2026-06")
ROTATED = Keyring({"2026-12": NEW, "2026-06": OLD}, current="2026-12")


def ring_file(tmp_path: Path, keys: dict[str, bytes], current: str = "2026-06") -> str:
    path = tmp_path / f"ring-{len(list(tmp_path.iterdir()))}.json"
    encoded = {key_id: base64.b64encode(key).decode() for key_id, key in keys.items()}
    path.write_text(json.dumps({"current": current, "keys": encoded}))
    return str(path)


def converse(client: valkey.Valkey, session_id: str = "user-42", **settings: Any) -> Agent:
    manager = ValkeySessionManager(session_id, client, **settings)
    agent = Agent(
        agent_id="assistant", model=ScriptedModel(["Noted.", "Sure."]), session_manager=manager, callback_handler=None
    )
    agent.state.set("note", MARKER)
    agent(f"Remember {MARKER}, and this: " + "a long sentence that repeats " * 60)
    agent("Thanks")
    return agent


def stored(client: valkey.Valkey, session_id: str = "user-42") -> dict[str, str]:
    keys = [*client.keys(f"session:{session_id}"), *client.keys(f"session:{session_id}:*")]
    return {key: get(client, key) for key in keys if client.type(key) == "string"}


def get(client: valkey.Valkey, key: str) -> bytes | None:
    """A stored value as bytes (a sealed one is binary), whatever the client decodes."""
    return client.execute_command("GET", key, **{NEVER_DECODE: True})


def test_show_reads_an_encrypted_session_given_the_keyring_from_a_file_or_the_environment(
    cli, client, tmp_path, monkeypatch
) -> None:
    converse(client, encryption=RING, compression="zstd")
    path = ring_file(tmp_path, {"2026-06": OLD})

    without = cli("show", "user-42")
    with_file = cli("show", "user-42", "--keyring-file", path)
    monkeypatch.setenv(sealed.KEYRING_ENV, Path(path).read_text())
    with_env = cli("show", "user-42", "--json")
    raw = cli("show", "user-42", "--raw")

    assert without.exit_code == 4 and MARKER not in without.stdout
    assert "encrypted with key id <2026-06>, and no keyring was given" in without.stderr
    assert "(the CLI: --keyring-file or STRANDS_VALKEY_KEYRING)" in without.stderr
    assert with_file.exit_code == 0 and MARKER in with_file.stdout
    assert with_env.exit_code == 0 and json.loads(with_env.stdout)["agents"]["assistant"]["agent"]["state"] == {
        "note": MARKER
    }
    assert raw.exit_code == 0 and MARKER not in raw.stdout and '"~svm1:ze:2026-06:' in raw.stdout


def test_a_wrong_key_or_an_unusable_keyring_file_is_a_clear_error(cli, client, tmp_path) -> None:
    converse(client, encryption=RING)
    wrong = cli("show", "user-42", "--keyring-file", ring_file(tmp_path, {"2026-06": NEW}))
    other = cli("export", "user-42", "--keyring-file", ring_file(tmp_path, {"2026-12": NEW}, "2026-12"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"current": "a", "keys": {"a": "c2hvcnQ="}}')
    unusable = cli("show", "user-42", "--keyring-file", str(bad))

    assert wrong.exit_code == 4 and "fails authentication under key id <2026-06>" in wrong.stderr
    assert other.exit_code == 4 and "key id <2026-06> is not in the keyring (it holds 2026-12)" in other.stderr
    assert unusable.exit_code == 2 and "not a usable keyring" in unusable.stderr and "32 raw bytes" in unusable.stderr


def test_export_opens_values_and_import_seals_them_for_their_new_key_names(cli, client, tmp_path) -> None:
    agent = converse(client, encryption=RING, compression="gzip")
    path, ring = tmp_path / "out.json", ring_file(tmp_path, {"2026-06": OLD})

    assert cli("export", "user-42", "-o", str(path), "--keyring-file", ring).exit_code == 0
    cli("delete", "user-42", "--yes")
    imported = cli("import", str(path), "--key-prefix", "moved", "--keyring-file", ring, "--compression", "zstd")

    assert MARKER in path.read_text() and "~svm1" not in path.read_text()  # plain JSON in the file
    assert imported.exit_code == 0, imported.stderr
    values = {key: get(client, key) for key in client.keys("moved:user-42*") if client.type(key) == "string"}
    assert len(values) == 6 and all(value.startswith(b"~svm1:") for value in values.values())
    assert values["moved:user-42:agent:assistant:message:0"].startswith(
        b"~svm1:ze:2026-06:"
    )  # the long one, compressed
    manager = ValkeySessionManager("user-42", client, key_prefix="moved", encryption=RING)
    restored = Agent(agent_id="assistant", session_manager=manager, model=ScriptedModel([]), callback_handler=None)
    assert restored.messages == agent.messages and restored.state.get("note") == MARKER


def test_a_raw_export_is_byte_for_byte_and_bound_to_its_key_names(cli, client, tmp_path) -> None:
    converse(client, encryption=RING)
    before = stored(client)
    path = tmp_path / "raw.json"

    assert cli("export", "user-42", "-o", str(path), "--raw").exit_code == 0
    cli("delete", "user-42", "--yes")
    assert cli("import", str(path)).exit_code == 0
    assert cli("import", str(path), "--key-prefix", "moved").exit_code == 0

    assert stored(client) == before and MARKER not in path.read_text()
    with pytest.raises(Exception, match="key=<moved:user-42> | value fails authentication"):
        ValkeySessionManager("user-42", client, key_prefix="moved", encryption=RING)


def test_rekey_moves_every_value_to_the_current_key_and_can_be_run_again(cli, client, tmp_path) -> None:
    converse(client, "old", encryption=RING, compression="zstd")
    converse(client, "plain")
    converse(client, "new", encryption=ROTATED)
    ring = ring_file(tmp_path, {"2026-12": NEW, "2026-06": OLD}, "2026-12")

    sessions = cli("sessions", "--json")
    first = cli("rekey", "--match", "*", "--keyring-file", ring)
    again = cli("rekey", "old", "plain", "new", "--keyring-file", ring)

    assert sorted(s["session_id"] for s in json.loads(sessions.stdout)) == ["new", "old", "plain"]
    assert first.exit_code == 0, first.stderr
    assert "re-encrypted 12 values of 3 sessions with key 2026-12" in first.stdout  # 6 old, 6 plain
    assert "re-encrypted 0 values of 3 sessions" in again.stdout
    headers = {
        key: value.decode("latin-1").split(":")[1:3]
        for s in ("old", "plain", "new")
        for key, value in stored(client, s).items()
    }
    assert {key_id for _, key_id in headers.values()} == {"2026-12"}
    assert headers["session:old:agent:assistant:message:0"][0] == "ze"  # its compression kept
    only_new = Keyring({"2026-12": NEW}, current="2026-12")
    for session_id in ("old", "plain", "new"):  # readable without the old key now
        manager = ValkeySessionManager(session_id, client, encryption=only_new)
        agent = Agent(agent_id="assistant", session_manager=manager, model=ScriptedModel([]), callback_handler=None)
        assert agent.state.get("note") == MARKER and len(agent.messages) == 4


def test_rekey_replaces_only_values_unchanged_since_it_read_them(client, raw_client) -> None:
    converse(client, encryption=RING)
    store = Store.of(raw_client)
    dump = store.dump("user-42")
    written_meanwhile = ValkeySessionManager("user-42", client, encryption=RING)
    written_meanwhile.update_agent("user-42", written_meanwhile.read_agent("user-42", "assistant"))
    agent_value = get(client, "session:user-42:agent:assistant")

    assert sealed.rekey(store, dump, ROTATED) == (5, 1)
    assert get(client, "session:user-42:agent:assistant") == agent_value  # left to its writer
    assert client.pttl("session:user-42:agent:assistant:message:0") > 0  # TTLs kept


def test_rekey_without_a_keyring_is_a_usage_error(cli, client) -> None:
    result = cli("rekey", "user-42")
    assert result.exit_code == 2 and "rekey needs the keyring" in result.stderr


def test_show_opens_a_snapshot_session_that_an_encrypted_valkey_storage_wrote(cli, server, tmp_path) -> None:
    storage = ValkeyStorage(valkey.asyncio.Valkey(port=server.port), encryption=RING, compression="zstd")
    try:
        manager = SnapshotSessionManager("user-43", storage=storage)
        Agent(session_manager=manager, model=ScriptedModel(["Noted."]), callback_handler=None)(f"Remember {MARKER}")
    finally:
        storage.close()

    without = cli("show", "user-43")
    shown = cli("show", "user-43", "--keyring-file", ring_file(tmp_path, {"2026-06": OLD}))

    assert without.exit_code == 4 and "encrypted with key id <2026-06>, and no keyring was given" in without.stderr
    assert shown.exit_code == 0, shown.stderr
    assert MARKER in shown.stdout and "snapshot layout" in shown.stdout


def test_tail_opens_encrypted_messages_given_the_keyring(client, raw_client, capsys) -> None:
    converse(client, encryption=RING)
    store = Store.of(raw_client)

    assert tail.follow(Output(False), store, "user-42", last=4, interval=0, looks=0, values=Values())
    without = capsys.readouterr().out
    assert tail.follow(Output(True), store, "user-42", last=4, interval=0, looks=0, values=Values(RING))
    shown = capsys.readouterr().out

    assert MARKER not in without and without.count("encrypted with key id <2026-06>, and no keyring was given") == 4
    assert [json.loads(line)["role"] for line in shown.splitlines()] == ["user", "assistant", "user", "assistant"]
    assert MARKER in shown
