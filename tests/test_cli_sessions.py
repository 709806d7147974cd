"""``strands-valkey sessions``: the listing, its filters, and what it costs the server."""

from __future__ import annotations

import json

import pytest
from helpers import CommandCounter
from strands import Agent

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.cli.store import Store
from strands_valkey_session_manager.keys import KeySchema
from strands_valkey_session_manager.testing.model import ScriptedModel


@pytest.mark.parametrize("cli", ["valkey", "glide"], indirect=True)
def test_sessions_lists_agents_messages_ttl_and_last_update(cli, seed) -> None:
    seed("user-1")
    seed("user-2", ttl=None, agents=("solo",))

    result = cli("sessions", "--json")

    assert result.exit_code == 0, result.stderr
    listed = {entry["session_id"]: entry for entry in json.loads(result.stdout)}
    assert set(listed) == {"user-1", "user-2"}
    assert (listed["user-1"]["agents"], listed["user-1"]["messages"]) == (2, 12)
    assert (listed["user-2"]["agents"], listed["user-2"]["messages"]) == (1, 6)
    assert 3590 <= listed["user-1"]["ttl"] <= 3600
    assert listed["user-2"]["ttl"] is None
    assert listed["user-1"]["updated_at"] > listed["user-1"]["created_at"]


def test_sessions_updated_is_the_last_append_which_touches_no_session_or_agent_record(cli, seed, client) -> None:
    seed("user-1", agents=("solo",))
    agent = Agent(
        agent_id="solo",
        model=ScriptedModel(["later"]),
        session_manager=ValkeySessionManager("user-1", client),
        callback_handler=None,
    )
    agent("a later turn")
    newest = json.loads(client.get("session:user-1:agent:solo:message:7"))
    records = [json.loads(client.get(key))["updated_at"] for key in ("session:user-1", "session:user-1:agent:solo")]

    listed = json.loads(cli("sessions", "--json").stdout)[0]

    assert listed["updated_at"] == newest["updated_at"] > max(records)


def test_sessions_match_keeps_only_ids_matching_the_glob(cli, client) -> None:
    for session_id in ("user-4", "user-42", "admin-1"):
        ValkeySessionManager(session_id=session_id, client=client)

    result = cli("sessions", "--match", "user-4*", "--json")

    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["user-4", "user-42"]


def test_sessions_limit_stops_after_n_sessions(cli, client) -> None:
    for number in range(5):
        ValkeySessionManager(session_id=f"s{number}", client=client)

    result = cli("sessions", "--limit", "2", "--json")

    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == 2
    assert "first 2 sessions" in result.stderr


def test_sessions_lists_a_page_of_50_by_default_and_says_how_to_see_the_rest(cli, client) -> None:
    for number in range(53):
        ValkeySessionManager(session_id=f"s{number:02}", client=client)

    page, every, scripted = cli("sessions"), cli("sessions", "--all"), cli("sessions", "--json")

    rows = page.stdout.splitlines()[1:]
    assert len(rows) == 50 and rows == sorted(rows)
    assert "showing the first 50 sessions found" in page.stderr and "--limit N or --all" in page.stderr
    assert len(every.stdout.splitlines()[1:]) == 53 and not every.stderr
    assert len(json.loads(scripted.stdout)) == 53  # a script gets every session unless it asks for fewer


def test_sessions_says_nothing_of_more_when_the_page_holds_them_all(cli, client) -> None:
    for number in range(50):
        ValkeySessionManager(session_id=f"s{number:02}", client=client)

    result = cli("sessions")

    assert len(result.stdout.splitlines()[1:]) == 50 and not result.stderr


def test_sessions_all_with_limit_is_a_usage_error(cli) -> None:
    result = cli("sessions", "--all", "--limit", "5")

    assert result.exit_code == 2 and "leave out --limit" in result.stderr


def test_sessions_skips_strings_under_the_prefix_that_are_not_session_records(cli, client) -> None:
    ValkeySessionManager(session_id="real", client=client)
    client.set("session:web-login", "flask session cookie data")
    client.set("session:other", json.dumps({"session_id": "someone-else"}))

    result = cli("sessions", "--json")

    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["real"]


def test_sessions_piped_is_a_plain_aligned_table(cli, seed) -> None:
    seed("user-1", agents=("solo",))

    result = cli("sessions")

    header, row = result.stdout.splitlines()
    assert header.split() == ["SESSION", "LAYOUT", "AGENTS", "MESSAGES", "SIZE", "TTL", "UPDATED"]
    assert row.split()[:5] == ["user-1", "manager", "1", "6", "-"]
    assert "\x1b[" not in result.stdout and "─" not in result.stdout


def test_sessions_scans_once_and_reads_counts_in_batches_not_per_session(cli, client) -> None:
    for number in range(30):
        manager = ValkeySessionManager(session_id=f"s{number}", client=client)
        for agent_id in ("a", "b"):
            client.zadd(manager.keys.messages(f"s{number}", agent_id), {"0": 0})
            client.sadd(manager.keys.index(f"s{number}"), f"agent:{agent_id}")

    with CommandCounter(client) as counter:
        result = cli("sessions", "--json")

    assert len(json.loads(result.stdout)) == 30
    assert counter.calls("scan") == 1  # 150 keys < COUNT 1000: one SCAN call for the whole keyspace
    assert counter.calls("keys") == 0
    assert counter.calls("zcard") == 60 and counter.calls("smembers") == 30
    # Last activity: the tail of each agent's record and of its newest message, never a whole message.
    assert counter.calls("zrange") == 60 and counter.calls("getrange") == 120


def test_sessions_of_the_cluster_key_layout_are_found_by_their_hash_tag(client) -> None:
    store = Store(client, KeySchema(cluster=True))
    plain = Store.of(client)
    ValkeySessionManager(session_id="standalone", client=client)
    dump = plain.dump("standalone")
    store.restore(dump)  # the same session, in the hash-tagged layout a cluster client uses

    assert [summary.session_id for summary in store.summaries()] == ["standalone"]
    assert client.exists("session:{standalone}") == 1


def test_client_glide_after_the_command_lists_and_shows_a_clusters_sessions(cluster, cluster_client) -> None:
    """--client glide after the command (a glide_sync cluster client, recognised by itself, as valkey-py's is)."""
    from cli_support import invoke

    manager = ValkeySessionManager("on-cluster", cluster_client, ttl=600)
    Agent(model=ScriptedModel(["pong"]), session_manager=manager, callback_handler=None)("ping")

    listed = invoke("sessions", "--json", "--client", "glide", "--url", cluster.url)
    shown = invoke("show", "on-cluster", "--client", "glide", "--url", cluster.url)

    assert listed.exit_code == 0, listed.stderr
    assert [(entry["session_id"], entry["messages"]) for entry in json.loads(listed.stdout)] == [("on-cluster", 2)]
    assert shown.exit_code == 0 and "ping" in shown.stdout and "pong" in shown.stdout, shown.stderr
