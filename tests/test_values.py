"""Private and compact values: encryption at rest, compression and a bound on size (values.py), on real servers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import valkey
from _reliability import keyspace
from conftest import SERVER_BINARY
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from helpers import CommandCounter, wait_until
from strands import Agent, tool
from strands.session.file_session_manager import FileSessionManager
from strands.types.exceptions import SessionException, StorageError
from strands.types.session import SessionMessage
from test_faults import put_to_sleep
from valkey.client import NEVER_DECODE

from benchmarks import scenario_values
from strands_valkey_session_manager import Keyring, ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.cli import sealed
from strands_valkey_session_manager.cli.store import Store
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey
from strands_valkey_session_manager.values import Values

MARKER = "purple-giraffe-4711 lives at 12 Secret Lane"
OLD, NEW = os.urandom(32), os.urandom(32)
RING = Keyring({"2026-06": OLD}, current="2026-06")
ROTATED = Keyring({"2026-12": NEW, "2026-06": OLD}, current="2026-12")
#: The benchmark's settings (plain, gzip, zstd, encrypted, zstd+encrypted), with this file's keyring.
SETTINGS: dict[str, dict[str, Any]] = {
    name: {**settings, "encryption": RING} if "encryption" in settings else settings
    for name, settings in scenario_values.SETTINGS.items()
}
TOOL_RESULT = {"rows": [{"id": n, "name": f"row {n}", "note": "a note that repeats " * 4} for n in range(60)]}


@tool
def lookup(topic: str) -> dict[str, Any]:
    """Look a topic up (a tool whose result is a few KB of JSON, so compression kicks in)."""
    return {"topic": topic, **TOOL_RESULT}


def agent_on(manager: Any, replies: Any = (), **kwargs: Any) -> Agent:
    return Agent(
        agent_id="assistant", model=ScriptedModel(replies), session_manager=manager, callback_handler=None, **kwargs
    )


def converse(manager: Any) -> Agent:
    """Two turns: one with a tool call (a multi-KB result), one with the marker; and agent state."""
    agent = agent_on(manager, [{"tool": "lookup", "input": {"topic": "valkey"}}, "Found it.", "Noted."], tools=[lookup])
    agent.state.set("secret", MARKER)
    agent("Look valkey up.")
    agent(f"Remember: {MARKER}")
    return agent


def without_tracking_ids(messages: list[Any]) -> list[Any]:
    """Messages without the SDK's tracking_id (a fresh uuid per run: two runs of one conversation differ there)."""
    return [{name: value for name, value in message.items() if name != "tracking_id"} for message in messages]


def get(client: valkey.Valkey, key: str) -> bytes | None:
    """A stored value as bytes (a sealed one is binary), whatever the client decodes."""
    return client.execute_command("GET", key, **{NEVER_DECODE: True})


def strings(client: valkey.Valkey) -> dict[str, bytes]:
    return {key: get(client, key) for key in client.scan_iter(count=1000) if client.type(key) == "string"}


@pytest.mark.parametrize("settings", ["encrypted", "zstd+encrypted"])
def test_marker_said_in_a_conversation_is_in_no_stored_value_and_in_no_rdb_or_aof_file(settings: str) -> None:
    with LocalValkey(binary=SERVER_BINARY, args=["--appendonly", "yes", "--appendfsync", "always"]) as local:
        client = local.client()
        converse(ValkeySessionManager("user-42", client, **SETTINGS[settings]))
        restored = agent_on(ValkeySessionManager("user-42", client, **SETTINGS[settings]))
        client.save()
        stored = strings(client)
        files = {path: path.read_bytes() for path in Path(local.dir).rglob("*") if path.is_file()}

    assert any(MARKER in str(message["content"]) for message in restored.messages)  # it was said, and restored
    assert restored.state.get("secret") == MARKER
    assert len(stored) == 8 and all(value.startswith(b"~svm1:") for value in stored.values())
    assert not [key for key, value in stored.items() if MARKER.split()[0].encode() in value]
    assert any(name.suffix == ".rdb" for name in files) and any(".aof" in name.name for name in files)
    assert not [path for path, data in files.items() if MARKER.split()[0].encode() in data]


def test_the_marker_is_in_the_files_when_encryption_is_off(tmp_path: Path) -> None:
    """The control for the test above: the same search finds it in plain values and their files."""
    with LocalValkey(binary=SERVER_BINARY, args=["--appendonly", "yes"]) as local:
        client = local.client()
        converse(ValkeySessionManager("user-42", client))
        client.save()
        files = [path.read_bytes() for path in Path(local.dir).rglob("*") if path.is_file()]
    assert sum(MARKER.split()[0].encode() in data for data in files) >= 2  # the RDB and the AOF


@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("settings", list(SETTINGS))
def test_every_setting_restores_what_file_session_manager_restores(
    server: LocalValkey, client: valkey.Valkey, tmp_path: Path, settings: str, decode: bool
) -> None:
    reference = converse(FileSessionManager("user-42", storage_dir=str(tmp_path)))
    converse(ValkeySessionManager("user-42", server.client(decode_responses=decode), **SETTINGS[settings]))

    restored = agent_on(ValkeySessionManager("user-42", server.client(decode_responses=decode), **SETTINGS[settings]))
    again = agent_on(FileSessionManager("user-42", storage_dir=str(tmp_path)))

    assert restored.messages != reference.messages  # the tracking ids: this run's and the reference's
    assert without_tracking_ids(restored.messages) == without_tracking_ids(again.messages)
    assert without_tracking_ids(again.messages) == without_tracking_ids(reference.messages)
    assert restored.state.get() == again.state.get()
    values = strings(client)
    sealed = [key for key, value in values.items() if value.startswith(b"~svm1:")]
    if settings == "plain":
        assert not sealed
    elif "encryption" in SETTINGS[settings]:
        assert len(sealed) == len(values)
    else:  # compression only: the tool result's message shrank; short chat turns stayed plain JSON
        assert "session:user-42:agent:assistant:message:2" in sealed and len(sealed) < len(values)


def test_sessions_written_under_every_setting_in_turn_restore_exactly(client: valkey.Valkey, tmp_path: Path) -> None:
    """A session whose settings changed between turns: each value is read as it was written."""
    reference = agent_on(FileSessionManager("mixed", storage_dir=str(tmp_path)), ["ok"] * 5, tools=[lookup])
    for settings in SETTINGS.values():
        agent = agent_on(
            ValkeySessionManager("mixed", client, **settings),
            [{"tool": "lookup", "input": {"topic": "x"}}, "ok"],
            tools=[lookup],
        )
        agent(f"Turn under {settings}")
    for settings in SETTINGS.values():
        reference(f"Turn under {settings}")

    restored = agent_on(ValkeySessionManager("mixed", client, encryption=RING, compression="gzip"))
    flags = {value.split(b":")[1].decode() for value in strings(client).values() if value.startswith(b"~svm1:")}

    assert flags == {"g", "z", "e", "ze"}  # every kind of value is there, and read
    assert len(restored.messages) == 4 * len(SETTINGS)
    assert [m["content"][0].get("text") for m in restored.messages if m["role"] == "user"][::2] == [
        m["content"][0]["text"] for m in reference.messages if m["role"] == "user"
    ]


def test_a_value_moved_to_another_key_or_session_is_refused(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("alice", client, encryption=RING))
    converse(ValkeySessionManager("mallory", client, encryption=RING))
    client.set("session:mallory:agent:assistant:message:3", get(client, "session:alice:agent:assistant:message:3"))
    client.set("session:alice:agent:assistant:message:0", get(client, "session:alice:agent:assistant:message:1"))

    for session_id, key in (
        ("mallory", "session:mallory:agent:assistant:message:3"),
        ("alice", "session:alice:agent:assistant:message:0"),
    ):
        with pytest.raises(SessionException) as failure:
            agent_on(ValkeySessionManager(session_id, client, encryption=RING))
        assert f"key=<{key}> | value fails authentication under key id <2026-06>" in str(failure.value)
        assert "moved here from another key" in str(failure.value)


def test_a_flipped_byte_anywhere_is_refused(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("user-42", client, encryption=RING, compression="zstd"))
    key = "session:user-42:agent:assistant:message:2"
    original = get(client, key)
    manager = ValkeySessionManager("user-42", client, encryption=RING)
    for at in (len("~svm1:"), len("~svm1:ze:2026-06:") + 10, len(original) - 3):  # a flag, the nonce, the tag
        flipped = original[:at] + bytes([original[at] ^ 0x01]) + original[at + 1 :]
        client.set(key, flipped)
        with pytest.raises(SessionException, match=f"key=<{key}> | value (fails authentication|cannot be decrypted)"):
            manager.read_message("user-42", "assistant", 2)
    client.set(key, original)
    assert manager.read_message("user-42", "assistant", 2) is not None


def test_a_missing_or_wrong_key_is_named_by_its_id(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("user-42", client, encryption=RING))

    with pytest.raises(SessionException, match=r"encrypted with key id <2026-06>, and no keyring was given"):
        ValkeySessionManager("user-42", client)
    with pytest.raises(SessionException, match=r"key id <2026-06> is not in the keyring \(it holds 2026-12\)"):
        ValkeySessionManager("user-42", client, encryption=Keyring({"2026-12": NEW}, current="2026-12"))
    with pytest.raises(SessionException, match=r"fails authentication under key id <2026-06>"):
        ValkeySessionManager("user-42", client, encryption=Keyring({"2026-06": NEW}, current="2026-06"))


def test_rotation_reads_old_values_and_writes_new_ones_with_the_new_key(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("user-42", client, encryption=RING))
    rotated = Keyring({"2026-12": NEW, "2026-06": OLD}, current="2026-12")

    agent = agent_on(ValkeySessionManager("user-42", client, encryption=rotated), ["Still here."])
    agent("Anything new?")

    assert len(agent.messages) == 8
    ids = {key: value.split(b":")[2].decode() for key, value in strings(client).items()}
    assert ids["session:user-42:agent:assistant:message:7"] == "2026-12"
    assert ids["session:user-42:agent:assistant"] == "2026-12"  # synced after the turn
    assert ids["session:user-42:agent:assistant:message:0"] == "2026-06"  # not rewritten: rekey does that (CLI)
    assert agent_on(ValkeySessionManager("user-42", client, encryption=rotated)).messages == agent.messages


def test_keys_from_a_key_provider_as_with_a_kms(client: valkey.Valkey) -> None:
    """A provider unwraps stored data keys with a master key it holds (as KMS Decrypt does for an envelope)."""
    master = os.urandom(32)
    wrapped = {"2026-06": aes_key_wrap(master, OLD), "2026-12": aes_key_wrap(master, NEW)}
    asked: list[str] = []

    def provider(key_id: str) -> bytes:
        asked.append(key_id)
        return aes_key_unwrap(master, wrapped[key_id])

    converse(ValkeySessionManager("user-42", client, encryption=RING))
    ring = Keyring(provider, current="2026-12")
    agent = agent_on(ValkeySessionManager("user-42", client, encryption=ring), ["ok"])
    agent("Hello")

    assert asked == ["2026-12", "2026-06"]  # each fetched once, when first needed
    assert repr(ring) == "Keyring(ids=['2026-06', '2026-12'], current='2026-12')"
    with pytest.raises(SessionException, match=r"the key provider has no key id <2027-01>"):
        Values(Keyring(provider, current="2026-12")).open("k", b"~svm1:e:2027-01:AAAA")


def test_keyring_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="must be 32 raw bytes"):
        Keyring({"a": b"short"}, current="a")
    with pytest.raises(ValueError, match="printable ASCII characters, without ':'"):
        Keyring({"a:b": OLD}, current="a:b")
    with pytest.raises(LookupError, match="key id <b> is not in the keyring"):
        Keyring({"a": OLD}, current="b")
    with pytest.raises(ValueError, match="compression=<'lz4'>"):
        Values(compression="lz4")
    with pytest.raises(ValueError, match="max_value_bytes=<0>"):
        Values(max_value_bytes=0)
    with pytest.raises(TypeError, match="Did you mean 'encryption'"):
        ValkeySessionManager.from_url("valkey://127.0.0.1:1", session_id="s", encrypton=RING)


@pytest.mark.parametrize("settings", ["plain", "encrypted", "zstd+encrypted"])
def test_a_value_above_max_value_bytes_is_refused_and_nothing_is_written(client: valkey.Valkey, settings: str) -> None:
    manager = ValkeySessionManager("user-42", client, max_value_bytes=4096, **SETTINGS[settings])
    agent = agent_on(manager, ["Short reply.", "ok"], tools=[lookup])
    agent("Hello")
    before = keyspace(client)

    with pytest.raises(SessionException) as failure:
        agent("x" * 5000)
    assert "key=<session:user-42:agent:assistant:message:2> | value of 5" in str(failure.value)
    assert "above max_value_bytes=4096" in str(failure.value) and "nothing was written" in str(failure.value)
    agent.state.set("big", "y" * 5000)
    with pytest.raises(SessionException, match=r"key=<session:user-42:agent:assistant> \| value of 5\d{3} bytes"):
        manager.sync_agent(agent)
    assert keyspace(client) == before


def test_redaction_keeps_created_at_and_replaces_the_sealed_message(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager("user-42", client, encryption=RING, compression="gzip")
    converse(manager)
    stored = manager.read_message("user-42", "assistant", 4)
    before = get(client, "session:user-42:agent:assistant:message:4")

    redacted = SessionMessage({"role": "user", "content": [{"text": "[redacted]"}]}, 4, created_at="2000-01-01")
    ValkeySessionManager("user-42", client, encryption=RING).update_message("user-42", "assistant", redacted)

    after = manager.read_message("user-42", "assistant", 4)
    assert after.message["content"] == [{"text": "[redacted]"}] and after.created_at == stored.created_at
    assert get(client, "session:user-42:agent:assistant:message:4") != before
    assert MARKER.split()[0] not in str(manager.list_messages("user-42", "assistant"))
    with pytest.raises(SessionException, match="Message 9 does not exist"):
        manager.update_message("user-42", "assistant", SessionMessage(redacted.message, 9))


def test_a_second_writer_on_the_same_agent_is_refused_with_encrypted_values(client: valkey.Valkey) -> None:
    first = agent_on(ValkeySessionManager("user-42", client, encryption=RING), ["one", "two"])
    first("Hello")  # message ids 0 and 1
    second = agent_on(ValkeySessionManager("user-42", client, encryption=RING), ["three"])  # restores them
    first("Again")  # 2 and 3
    before = strings(client)
    with CommandCounter(client) as counted, pytest.raises(SessionException) as failure:
        second("Hi")  # 2 again: a plain-command append (it knows message 1), whose SET NX GET finds first's
    assert "message:2> | append message refused: that message id already holds" in str(failure.value)
    assert counted.calls("exec") == 1  # the refusal came from the plain append's block
    after = strings(client)
    assert after.pop("session:user-42:agent:assistant") != before.pop("session:user-42:agent:assistant")  # synced
    assert after == before


def test_plain_command_writes_carry_sealed_values(client: valkey.Valkey) -> None:
    """An agent's next messages go as plain commands (and its state too, where the server has SET IFEQ)."""
    manager = ValkeySessionManager("user-42", client, encryption=RING)
    agent = agent_on(manager, ["one", "two"])
    agent("Hello")
    agent.state.set("mood", "curious")
    with CommandCounter(client) as counted:
        agent("Again")
    server = client.info("server")
    ifeq = tuple(int(part) for part in server.get("valkey_version", "0.0").split(".")[:2]) >= (8, 1)
    assert counted.calls("exec") == 2  # the two messages, each one MULTI/EXEC block
    assert counted.calls("fcall", "evalsha") == (0 if ifeq else 1)  # the state: SET IFEQ, else the script
    assert all(value.startswith(b"~svm1:e:2026-06:") for value in strings(client).values())
    assert agent_on(ValkeySessionManager("user-42", client, encryption=RING)).messages == agent.messages


def test_an_append_that_failed_on_the_wire_is_re_sent_byte_for_byte(server: LocalValkey, client: valkey.Valkey) -> None:
    slow = server.client(socket_timeout=0.5)
    agent = agent_on(ValkeySessionManager("user-42", slow, encryption=RING), ["one", "two", "three"])
    agent("before")

    sleeper = put_to_sleep(server, 2)
    with pytest.raises(SessionException, match="append message failed: TimeoutError"):
        agent("while the server sleeps")
    assert sleeper.recv(16) == b"+OK\r\n"
    wait_until(lambda: client.zcard("session:user-42:agent:assistant:messages") == 3, what="the late append")
    landed = get(client, "session:user-42:agent:assistant:message:2")
    agent("after")  # re-sends message 2 as sealed the first time: the same bytes, so it is done, not a conflict

    assert get(client, "session:user-42:agent:assistant:message:2") == landed
    restored = agent_on(ValkeySessionManager("user-42", client, encryption=RING))
    assert restored.messages == agent.messages and len(restored.messages) == 5


def test_sealed_sessions_are_deleted_and_foreign_values_still_refused(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("user-42", client, encryption=RING))
    ValkeySessionManager("user-42", client, encryption=RING).delete_session("user-42")  # plain delete (a new manager)
    manager = ValkeySessionManager("user-43", client, encryption=RING)
    converse(manager)
    manager.delete_session("user-43")  # by script (it knows messages)
    assert client.dbsize() == 0

    client.set("session:user-44", "~svx something else")
    with pytest.raises(SessionException, match="which this library did not write"):
        ValkeySessionManager("user-45", client, encryption=RING).delete_session("user-44")
    assert client.get("session:user-44") == "~svx something else"


# -- ValkeyStorage ---------------------------------------------------------------------------------------------------


def test_storage_encrypts_compresses_and_bounds_its_values(make_storage: Any, raw_client: valkey.Valkey) -> None:
    storage = make_storage(encryption=RING, compression="zstd", max_value_bytes=100_000)
    plain = make_storage()
    big = MARKER.encode() * 1000

    async def run() -> None:
        await storage.write("session/a/blob.json", big)
        await storage.write("session/a/small", b"~svm looks sealed but is not")
        await plain.write("session/b/raw", b"~svm1:e:x:plain bytes that look sealed")
        assert await storage.read("session/a/blob.json") == big
        assert await storage.read("session/a/small") == b"~svm looks sealed but is not"
        assert await plain.read("session/b/raw") == b"~svm1:e:x:plain bytes that look sealed"
        assert [result.key for result in await storage.search("giraffe")] == ["session/a/blob.json"]
        with pytest.raises(StorageError, match=r"value of 100001 bytes refused.*max_value_bytes=100000"):
            await storage.write("session/a/huge", b"z" * 100_001)
        assert await storage.read("session/a/huge") is None
        with pytest.raises(StorageError, match="encrypted with key id <2026-06>, and no keyring was given"):
            await plain.read("session/a/blob.json")
        raw_client.set("strands:session/a/small", raw_client.get("strands:session/a/blob.json"))
        with pytest.raises(StorageError, match=r"key=<strands:session/a/small> \| value fails authentication"):
            await storage.read("session/a/small")

    asyncio.run(run())
    stored = raw_client.get("strands:session/a/blob.json")
    assert stored.startswith(b"~svm1:ze:2026-06:") and len(stored) < len(big) / 10
    assert MARKER.split()[0].encode() not in stored


def test_the_default_bound_refuses_a_message_above_32_mib(client: valkey.Valkey) -> None:
    manager = ValkeySessionManager("user-42", client)
    agent = agent_on(manager, ["ok"])
    agent("Hello")
    before = keyspace(client)
    huge = SessionMessage({"role": "user", "content": [{"text": "x" * (32 * 1024 * 1024)}]}, 2)

    with pytest.raises(
        SessionException, match=r"message:2> \| value of 3355\d{4} bytes refused.*max_value_bytes=33554432"
    ):
        manager.create_message("user-42", "assistant", huge)
    assert keyspace(client) == before


def test_the_values_benchmark_measures_every_setting_on_both_transcripts(tmp_path: Path) -> None:
    results = scenario_values.main(["--smoke", "--out", str(tmp_path)])

    for kind in ("tool-heavy", "chat"):
        settings = results[kind]["settings"]
        assert list(settings) == ["plain", "gzip", "zstd", "encrypted", "zstd+encrypted"]
        assert settings["plain"]["memory_ratio"] == 1.0
        assert all(row["memory_per_message"] > 0 and row["restore_median_ms"] > 0 for row in settings.values())
    tool_heavy = results["tool-heavy"]["settings"]
    assert tool_heavy["zstd"]["stored_bytes_per_message"] < tool_heavy["plain"]["stored_bytes_per_message"] / 2
    assert json.loads((tmp_path / "benchmarks-values.json").read_text())["chat"]["restore_messages"] == 50


def test_a_message_created_again_as_it_was_is_done_not_a_conflict(client: valkey.Valkey) -> None:
    """Encrypted twice, one message gives other bytes; created again (a caller's retry), it is still a retry."""
    manager = ValkeySessionManager("user-42", client, encryption=RING, compression="zstd")
    agent_on(manager, ["ok"])("Hello")
    message = SessionMessage({"role": "user", "content": [{"text": "again " * 300}]}, 2)
    manager.create_message("user-42", "assistant", message)
    stored = get(client, "session:user-42:agent:assistant:message:2")

    ValkeySessionManager("user-42", client, encryption=RING).create_message("user-42", "assistant", message)
    other = SessionMessage({"role": "user", "content": [{"text": "different"}]}, 2)
    with pytest.raises(SessionException, match="that message id already holds a different message"):
        manager.create_message("user-42", "assistant", other)
    assert get(client, "session:user-42:agent:assistant:message:2") == stored


def test_a_cluster_session_is_encrypted_bound_to_its_hash_tagged_keys_and_rekeyed(cluster_client: Any) -> None:
    manager = ValkeySessionManager("user-42", cluster_client, encryption=RING, compression="zstd")
    agent = converse(manager)
    records = [manager.keys.session("user-42"), manager.keys.agent("user-42", "assistant")]
    records += manager.keys.message_keys("user-42", "assistant", list(range(6)))
    store = Store.of(cluster_client)

    assert records[0] == "session:{user-42}" and all(get(cluster_client, key)[:6] == b"~svm1:" for key in records)
    assert sealed.rekey(store, store.dump("user-42"), ROTATED) == (8, 0)
    assert {get(cluster_client, key).split(b":")[2] for key in records} == {b"2026-12"}
    restored = agent_on(ValkeySessionManager("user-42", cluster_client, encryption=ROTATED))
    assert restored.messages == agent.messages and restored.state.get("secret") == MARKER


def test_storage_from_url_takes_the_value_options(server: LocalValkey, raw_client: valkey.Valkey) -> None:
    storage = ValkeyStorage.from_url(server.url, encryption=RING, compression="gzip", max_value_bytes=10_000)
    try:
        asyncio.run(storage.write("session/a/x", MARKER.encode() * 100))
        assert asyncio.run(storage.read("session/a/x")) == MARKER.encode() * 100
        assert raw_client.get("strands:session/a/x").startswith(b"~svm1:ge:2026-06:")
        with pytest.raises(StorageError, match="max_value_bytes=10000"):
            asyncio.run(storage.write("session/a/y", b"y" * 10_001))
    finally:
        storage.close()


def test_a_keyring_without_a_current_key_reads_encrypted_values_and_writes_plain_ones(client: valkey.Valkey) -> None:
    converse(ValkeySessionManager("user-42", client, encryption=RING))
    read_only = Keyring({"2026-06": OLD}, current=None)

    agent = agent_on(ValkeySessionManager("user-42", client, encryption=read_only), ["Plain now."])
    agent("And now?")

    values = strings(client)
    assert values["session:user-42:agent:assistant:message:0"].startswith(b"~svm1:e:2026-06:")
    assert values["session:user-42:agent:assistant:message:7"].startswith(b'{"')
    assert values["session:user-42:agent:assistant"].startswith(b'{"created_at":')  # the sync, plain
    assert agent_on(ValkeySessionManager("user-42", client, encryption=read_only)).messages == agent.messages
