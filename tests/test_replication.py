"""wait_replicas: each write waits (WAIT, same round trip) until replicas have it, or the caller hears of it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import valkey
from conftest import SERVER_BINARY
from helpers import CommandCounter, CountingConnection, counting_client, wait_until
from strands.types.exceptions import SessionException
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.server import LocalValkey


class Replicated:
    """A primary and one replica of it (``--replicaof``), both throwaway."""

    def __init__(self) -> None:
        self.primary = LocalValkey(binary=SERVER_BINARY, args=["--repl-diskless-sync-delay", "0"]).start()
        self.replica = LocalValkey(binary=SERVER_BINARY, args=["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.replica.start()
        self.wait_in_sync()

    def wait_in_sync(self) -> None:
        """Wait until the replica is linked and has everything the primary has."""
        with self.primary.client() as primary, self.replica.client() as replica:

            def in_sync() -> bool:
                link = replica.info("replication")
                offset = primary.info("replication")["master_repl_offset"]
                return link.get("master_link_status") == "up" and link.get("slave_repl_offset") == offset

            wait_until(in_sync, timeout=20, what="the replica to be in sync")

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    pair = Replicated()
    yield pair
    pair.stop()


@pytest.fixture
def primary(replicated: Replicated) -> Iterator[valkey.Valkey]:
    """A client of the emptied primary, the replica in sync with it."""
    c = replicated.primary.client()
    c.flushall()
    replicated.wait_in_sync()
    yield c
    c.close()


def test_every_acknowledged_write_is_already_on_the_replica(replicated: Replicated, primary, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("user-42", primary, wait_replicas=1))

    agent("hello")

    keys = [f"session:user-42:agent:assistant:message:{n}" for n in (0, 1)]
    with replicated.replica.client() as replica:
        assert replica.mget(["session:user-42", "session:user-42:agent:assistant", *keys]) == primary.mget(
            ["session:user-42", "session:user-42:agent:assistant", *keys]
        )


def test_wait_adds_one_command_per_write_and_no_round_trip(replicated: Replicated, primary, make_agent) -> None:
    counted = counting_client(replicated.primary.port)
    agent = make_agent(ValkeySessionManager("user-42", counted, wait_replicas=1))
    agent("warm up")

    with CommandCounter(primary) as counter:
        before = CountingConnection.round_trips
        agent("hello")  # two messages appended
        round_trips = CountingConnection.round_trips - before

    assert (counter.calls("exec"), counter.calls("wait")) == (2, 2)
    assert round_trips == 2  # script and WAIT leave in one request: one round trip per message


def test_write_no_replica_acknowledged_raises_and_is_sent_again_with_the_next(
    replicated: Replicated, primary, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager("user-42", primary, wait_replicas=1, wait_timeout_ms=200))
    agent("one")
    replica_pid = replicated.replica.process.pid
    os.kill(replica_pid, signal.SIGSTOP)  # the replica stops acknowledging anything
    try:
        with pytest.raises(SessionException, match="0 of 1 replicas acknowledged"):
            agent("two")
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    replicated.wait_in_sync()

    agent("three")

    restored = make_agent(ValkeySessionManager("user-42", primary))
    assert restored.messages == agent.messages
    assert [m["content"][0]["text"] for m in restored.messages if m["role"] == "user"] == ["one", "two", "three"]
    assert primary.zrange("session:user-42:agent:assistant:messages", 0, -1) == ["0", "1", "2", "3", "4"]


def test_an_append_whose_wait_fails_after_another_process_deleted_the_session_leaves_no_key(
    replicated: Replicated, primary, make_agent
) -> None:
    agent = make_agent(ValkeySessionManager("user-42", primary, wait_replicas=1, wait_timeout_ms=200))
    agent("one")  # its next append is a plain MULTI/EXEC block, then WAIT
    ValkeySessionManager("user-42", primary).delete_session("user-42")  # logout, from another process
    replica_pid = replicated.replica.process.pid
    os.kill(replica_pid, signal.SIGSTOP)  # and no replica acknowledges
    try:
        with pytest.raises(SessionException, match="no longer exists"):  # settled first: the append is taken back
            agent._session_manager.append_message({"role": "user", "content": [{"text": "two"}]}, agent)
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    replicated.wait_in_sync()

    assert primary.keys("*") == []


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"wait_replicas": -1}, "wait_replicas"),
        ({"wait_replicas": True}, "wait_replicas"),
        ({"wait_replicas": 1, "wait_timeout_ms": 0}, "wait_timeout_ms"),
    ],
)
def test_unusable_wait_settings_are_refused_before_anything_is_written(
    client: valkey.Valkey, options: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        ValkeySessionManager("user-42", client, **options)

    assert client.keys("*") == []


def test_on_a_cluster_wait_goes_to_the_primary_that_owns_the_session(
    cluster: LocalCluster, cluster_client: ValkeyCluster, make_agent
) -> None:
    owner = cluster.master_of("session:{user-42}")
    waits = {}
    for node in cluster.nodes:
        with node.client() as c:
            waits[node.port] = int(c.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    make_agent(ValkeySessionManager("user-42", cluster_client, wait_replicas=1))("hello")

    for node in cluster.nodes:
        with node.client() as c:
            waits[node.port] = int(c.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) - waits[node.port]
    assert waits.pop(owner.port) >= 3  # session record, agent record, two messages (at least)
    assert set(waits.values()) == {0}
