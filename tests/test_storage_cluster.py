"""ValkeyStorage on a Valkey Cluster: a group (one session's snapshots) lives in one slot; groups spread out.

Uses the ``cluster`` fixture (``LocalCluster``, 3 primaries + 3 replicas) from the cluster work; without it
this module is skipped, and says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import valkey.asyncio
from conftest import twin_of
from strands import Agent
from strands.session import SnapshotSessionManager
from strands.storage import InMemoryStorage
from test_storage import scripted_scenario
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeyStorage
from strands_valkey_session_manager.testing.model import ScriptedModel

pytest.importorskip("strands_valkey_session_manager.testing.cluster", reason="needs LocalCluster (branch cluster)")

GROUP = "session/user-42"
LATEST = f"{GROUP}/scopes/agent/assistant/snapshots/snapshot_latest.json"


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


@pytest.fixture
def cluster_storage(cluster: Any, cluster_client: ValkeyCluster, storage_kind: str) -> Iterator[ValkeyStorage]:
    """A ``ValkeyStorage`` on the emptied test cluster, scripts flushed (so the NOSCRIPT path runs too)."""
    cluster_client.script_flush()
    given = twin_of(cluster_client, storage_kind)
    if storage_kind == "asyncio":
        given = valkey.asyncio.ValkeyCluster.from_url(cluster.url)
    storage = ValkeyStorage(given, ttl=3600)
    yield storage
    storage.close()


def keyspace(cluster_client: ValkeyCluster) -> list[str]:
    return sorted(cluster_client.keys("*", target_nodes=ValkeyCluster.PRIMARIES))


def test_a_groups_keys_are_tagged_with_the_group_and_share_one_slot(
    cluster_storage: ValkeyStorage, cluster_client: ValkeyCluster
) -> None:
    run(cluster_storage.write(LATEST, b"x"))
    run(cluster_storage.write(f"{GROUP}/scopes/agent/other/snapshots/snapshot_latest.json", b"y"))

    group_keys = [key for key in keyspace(cluster_client) if "{session/user-42}" in key]
    assert group_keys == [
        "strands:{session/user-42}/",
        "strands:{session/user-42}/scopes/agent/assistant/snapshots/snapshot_latest.json",
        "strands:{session/user-42}/scopes/agent/other/snapshots/snapshot_latest.json",
    ]
    assert len({cluster_client.keyslot(key) for key in group_keys}) == 1
    registry = [key for key in keyspace(cluster_client) if key.endswith("//groups")]
    assert len(registry) == 1 and cluster_client.keyslot(registry[0]) == cluster_client.keyslot(group_keys[0])


def test_groups_spread_over_the_primaries(cluster_storage: ValkeyStorage, cluster_client: ValkeyCluster) -> None:
    for number in range(30):
        run(cluster_storage.write(f"session/s{number}/snapshot.json", b"x"))

    owners = {cluster_client.get_node_from_key(f"strands:{{session/s{n}}}/").name for n in range(30)}
    assert len(owners) == 3


def test_the_scripted_scenario_shows_the_same_on_a_cluster_as_in_memory(cluster_storage: ValkeyStorage) -> None:
    assert run(scripted_scenario(cluster_storage)) == run(scripted_scenario(InMemoryStorage()))


def test_every_key_of_a_group_shares_one_deadline(
    cluster_storage: ValkeyStorage, cluster_client: ValkeyCluster
) -> None:
    run(cluster_storage.write(LATEST, b"x"))
    run(cluster_storage.write(f"{GROUP}/scopes/agent/assistant/snapshots/immutable_history/a.json", b"y"))

    deadlines = {cluster_client.pexpiretime(key) for key in keyspace(cluster_client) if "{session/user-42}" in key}
    assert len(deadlines) == 1 and deadlines.pop() > 0


def test_an_agent_session_round_trips_and_delete_session_empties_the_cluster(
    cluster_storage: ValkeyStorage, cluster_client: ValkeyCluster
) -> None:
    def agent(replies: Any = ()) -> Agent:
        manager = SnapshotSessionManager("user-42", storage=cluster_storage, snapshot_trigger=lambda **_: True)
        return Agent(agent_id="assistant", model=ScriptedModel(replies), session_manager=manager, callback_handler=None)

    first = agent(["pong"])
    first("ping")
    restored = agent()

    assert [m["content"][0]["text"] for m in restored.messages] == ["ping", "pong"]
    run(restored._session_manager.delete_session())  # type: ignore[union-attr]
    assert keyspace(cluster_client) == []


@pytest.mark.valkey_py_only  # scrambles valkey-py's slot map (GLIDE's driver reads CLUSTER SLOTS per listing)
def test_listing_above_groups_recovers_from_a_stale_slot_map(
    cluster_storage: ValkeyStorage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="strands_valkey_session_manager.storage")
    keys = [f"session/s{number}/snapshot.json" for number in range(30)]
    for key in keys:
        run(cluster_storage.write(key, b"x"))

    async def scramble(client: Any) -> None:  # as if slots had moved since the client last looked
        await client.initialize()
        cache = client.nodes_manager.slots_cache
        primaries = sorted({nodes[0].name: nodes[0] for nodes in cache.values()}.items())
        for slot, nodes in cache.items():
            others = [node for name, node in primaries if name != nodes[0].name]
            cache[slot] = [others[slot % len(others)]]

    run(cluster_storage._io.run(scramble))

    assert run(cluster_storage.list("session/")) == sorted(keys)
    assert "slot map changed while listing" in caplog.text
