"""``strands-valkey show`` and ``keys``: a session's transcript and its raw keys."""

from __future__ import annotations

import json

import pytest
from cli_support import PNG
from helpers import CommandCounter

from strands_valkey_session_manager import ValkeySessionManager


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_show_prints_roles_text_tool_calls_results_image_sizes_and_state(cli, seed) -> None:
    seed("user-42", agents=("researcher",), swarm=True)

    result = cli("show", "user-42")

    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "agent researcher" in text
    assert "user       Research Valkey." in text  # roles padded to the longest, "assistant"
    assert '→ lookup({"topic": "valkey"})' in text
    assert "← success" in text and "facts about valkey" in text
    assert "assistant  Valkey is fast." in text
    assert f"[image png, {len(PNG)} bytes]" in text
    assert 'state {"stage": "draft"}' in text
    assert "multi-agent default_swarm" in text and '"status": "completed"' in text


def test_show_aligns_ids_and_roles_so_every_text_starts_in_one_column(cli, client, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", client), "solo", replies=[f"reply {n}" for n in range(6)])
    for number in range(6):
        agent(f"prompt {number}")  # messages #0 to #11: ids of one and two digits, both roles

    lines = [line for line in cli("show", "user-42").stdout.splitlines() if line.lstrip().startswith("#")]

    starts = {line.index("prompt ") if "prompt " in line else line.index("reply ") for line in lines}
    assert len(lines) == 12 and len(starts) == 1
    assert lines[0].startswith(" #0 ") and lines[11].startswith("#11 ")


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_show_json_is_the_session_as_an_export_entry(cli, seed) -> None:
    seed("user-42", agents=("researcher",))

    entry = json.loads(cli("show", "user-42", "--json").stdout)

    assert entry["session_id"] == "user-42"
    messages = entry["agents"]["researcher"]["messages"]
    assert list(messages) == [str(i) for i in range(6)]
    assert messages["0"]["message"]["content"][0]["text"] == "Research Valkey."


def test_show_of_an_unknown_session_exits_1(cli) -> None:
    result = cli("show", "nobody")

    assert result.exit_code == 1
    assert "no session nobody" in result.stderr


def test_keys_lists_every_key_of_the_session_with_type_ttl_length_and_memory(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))
    seed("user-420", agents=("solo",))  # matched by the glob user-42*, but another session

    listed = {entry["key"]: entry for entry in json.loads(cli("keys", "user-42", "--json").stdout)}

    assert set(listed) == {"session:user-42", *client.keys("session:user-42:*")}
    assert listed["session:user-42:index"]["type"] == "set"
    assert listed["session:user-42:agent:solo:messages"] == {
        **listed["session:user-42:agent:solo:messages"],
        "length": 6,
    }
    message = listed["session:user-42:agent:solo:message:0"]
    assert message["type"] == "string" and message["length"] == client.strlen("session:user-42:agent:solo:message:0")
    assert all(3590 <= entry["ttl"] <= 3600 and entry["memory"] > 0 for entry in listed.values())


def test_keys_follows_the_session_index_without_scan_or_keys(cli, seed, client) -> None:
    seed("user-42", agents=("solo",))

    with CommandCounter(client) as counter:
        result = cli("keys", "user-42")

    assert result.exit_code == 0
    assert counter.calls("scan", "keys") == 0
    assert "found through the session index session:user-42:index" in result.stderr
    assert result.stdout.splitlines()[0].split() == ["KEY", "TYPE", "TTL", "LENGTH", "MEMORY"]


def test_keys_of_an_unknown_session_exits_1(cli) -> None:
    assert cli("keys", "nobody").exit_code == 1


def test_keys_counts_one_key_in_the_singular(cli, client) -> None:
    ValkeySessionManager("lonely", client)  # a session without agents: its record is its one key

    result = cli("keys", "lonely")

    assert "1 key, found through the session index" in result.stderr
