"""Efficiency (CONTRACT.md): counted in server commands (INFO commandstats) and round trips, never timed."""

from __future__ import annotations

import pytest
import valkey
from helpers import CommandCounter, CountingConnection, counting_client, has_ifeq, populate
from strands.types.session import SessionMessage

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")


def conversation(client: valkey.Valkey, make_agent, messages: int, session: str = "s") -> None:
    agent = make_agent(ValkeySessionManager(session_id=session, client=client))
    manager = agent._session_manager
    for i in range(messages):
        role = "user" if i % 2 == 0 else "assistant"
        manager.append_message({"role": role, "content": [{"text": f"message {i}"}]}, agent)


def restore_counts(client: valkey.Valkey, make_agent, session: str = "s") -> dict[str, int]:
    with CommandCounter(client) as counter:
        agent = make_agent(ValkeySessionManager(session_id=session, client=client))
    assert agent.messages, "nothing was restored"
    return counter.counts


def test_restore_takes_the_same_commands_for_20_and_200_messages(client: valkey.Valkey, make_agent) -> None:
    conversation(client, make_agent, 20, session="short")
    conversation(client, make_agent, 200, session="long")

    short, long = restore_counts(client, make_agent, "short"), restore_counts(client, make_agent, "long")

    assert short == long
    assert long["mget"] == 1 and sum(long.values()) == 10  # the README's table
    assert long.get("get", 0) <= 2  # the session record and the agent record, never one per message


def test_restore_takes_the_same_commands_with_100k_unrelated_keys(client: valkey.Valkey, make_agent) -> None:
    conversation(client, make_agent, 200)
    quiet = restore_counts(client, make_agent)
    populate(client, 100_000)

    assert restore_counts(client, make_agent) == quiet


def test_restore_takes_a_constant_number_of_round_trips(server: LocalValkey, client: valkey.Valkey, make_agent) -> None:
    counting = counting_client(server.port)
    trips = []
    for n in (20, 200):
        conversation(client, make_agent, n, session=f"s{n}")
        CountingConnection.round_trips = 0
        make_agent(ValkeySessionManager(session_id=f"s{n}", client=counting))
        trips.append(CountingConnection.round_trips)
    assert trips[0] == trips[1] <= 5, trips


def test_appending_a_message_is_one_round_trip(server: LocalValkey, make_agent) -> None:
    counting = counting_client(server.port)
    agent = make_agent(ValkeySessionManager(session_id="s", client=counting))
    CountingConnection.round_trips = 0
    agent._session_manager.append_message({"role": "user", "content": [{"text": "hi"}]}, agent)
    assert CountingConnection.round_trips == 1


def test_syncing_the_agent_is_one_round_trip(server: LocalValkey, make_agent) -> None:
    counting = counting_client(server.port)
    agent = make_agent(ValkeySessionManager(session_id="s", client=counting))
    agent.state.set("k", "v")
    agent._session_manager.sync_agent(agent)  # a server without IFEQ says so once per client: then the script
    agent.state.set("k", "w")
    CountingConnection.round_trips = 0
    with CommandCounter(counting) as counter:
        agent._session_manager.sync_agent(agent)
    assert CountingConnection.round_trips == 1 + 2  # and the counter's two INFOs
    # The README's table: one SET ... IFEQ <what it stored> KEEPTTL where the server has IFEQ (Valkey 8.1+); else
    # one script, which reads the record before it writes (a value this library did not write is never replaced,
    # not even for a moment).
    if has_ifeq(counting):
        assert counter.counts == {"set": 1}
    else:
        assert counter.counts == {"fcall": 1, "pttl": 1, "pexpiretime": 1, "get": 1, "set": 1}


def test_an_append_costs_the_same_commands_at_10_and_at_200_messages(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager(session_id="s", client=client))
    manager = agent._session_manager
    costs = {}
    for i in range(201):
        message = {"role": "user", "content": [{"text": f"message {i}"}]}
        with CommandCounter(client) as counter:
            manager.append_message(message, agent)
        costs[i] = counter.counts
    assert costs[10] == costs[200]
    # The README's table: the message, its id, the agent in the index, a deadline for a ZSET or index the block
    # re-creates (NX: none for those that have one), the session's deadline read back.
    plain = {"set": 1, "zadd": 1, "sadd": 1, "pexpireat": 2, "pexpiretime": 1}
    assert costs[200] == {"multi": 1, **plain, "exec": 1}


def test_delete_session_on_logout_is_one_transaction_whose_cost_ignores_other_keys(
    server: LocalValkey, client: valkey.Valkey, make_agent, client_kind: str
) -> None:
    def delete_counts() -> dict[str, int]:
        conversation(client, make_agent, 200)
        with CommandCounter(client) as counter:
            ValkeySessionManager(session_id="s", client=client).delete_session("s")
        assert client.keys("session:*") == []
        return counter.counts

    quiet = delete_counts()
    populate(client, 100_000)
    assert delete_counts() == quiet
    # Opening reads the record, the members, the deadline and the clock (GET, SMEMBERS, PEXPIRETIME, TIME); the
    # delete watches and reads the first two again with the message ids (WATCH, GET, SMEMBERS, ZRANGE), then
    # deletes its 205 keys in one DEL in MULTI/EXEC: no command per message, no script.
    opening = {"pexpiretime": 1, "time": 1}
    delete = {"watch": 1, "zrange": 1, "multi": 1, "del": 1, "exec": 1}
    if client_kind.startswith("glide"):
        # No connection to hold for WATCH (driver_glide.py): the script, which learns the messages from its walk
        # (one call refused UNDECLARED naming them, one that deletes; their commands counted inside), and no more.
        assert quiet == {**opening, "get": 2, "smembers": 3, "zrange": 2, "fcall": 2, "type": 1, "del": 1}
        return
    assert quiet == {**opening, **delete, "get": 2, "smembers": 2}


def test_delete_session_takes_a_constant_number_of_round_trips(
    server: LocalValkey, client: valkey.Valkey, make_agent
) -> None:
    counting = counting_client(server.port)
    fresh, holding = [], []
    for n in (20, 200):
        conversation(client, make_agent, n, session=f"s{n}")
        CountingConnection.round_trips = 0
        ValkeySessionManager(session_id=f"s{n}", client=counting).delete_session(f"s{n}")
        fresh.append(CountingConnection.round_trips)
        agent = make_agent(ValkeySessionManager(session_id=f"h{n}", client=counting))
        for i in range(n):
            agent._session_manager.append_message({"role": "user", "content": [{"text": f"message {i}"}]}, agent)
        CountingConnection.round_trips = 0
        agent._session_manager.delete_session(f"h{n}")
        holding.append(CountingConnection.round_trips)
    # A new manager's construction (1 round trip) reads the session's members with its record; the delete
    # then watches and reads their message ids, then deletes; the manager that wrote the conversation knows
    # every key, and its script checks them by walking the session.
    assert fresh == [3, 3] and holding == [1, 1], (fresh, holding)


def test_no_path_an_agent_takes_uses_scan_or_keys(client: valkey.Valkey, make_agent) -> None:
    with CommandCounter(client) as counter:
        manager = ValkeySessionManager(session_id="s", client=client)
        agent = make_agent(manager)
        agent("hi")
        manager.redact_latest_message({"role": "assistant", "content": [{"text": "x"}]}, agent)
        manager.create_message("s", "assistant", SessionMessage({"role": "user", "content": []}, 2))
        make_agent(ValkeySessionManager(session_id="s", client=client))
        manager.list_messages("s", "assistant", limit=1, offset=1)
        manager.delete_session("s")
    assert not {"scan", "keys"} & set(counter.counts), counter.counts
