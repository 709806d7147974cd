"""The CLI on ``SnapshotSessionManager`` sessions kept by ``ValkeyStorage`` (issue 24), standalone and cluster.

Every snapshot session here is written by the real SDK: a ``SnapshotSessionManager`` on a ``ValkeyStorage``
driving a real ``Agent`` on the scripted model (and the SDK's context stash); no key is written by hand.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import valkey.asyncio
from cli_support import PNG, invoke
from helpers import CommandCounter
from strands import Agent
from strands._context_manager.stash import Stash
from strands.multiagent import Swarm
from strands.session import SnapshotSessionManager
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import ValkeySessionManager, ValkeyStorage
from strands_valkey_session_manager.testing.model import ScriptedModel

TURNS: list[Any] = [
    "Research Valkey.",
    [{"text": "What is in this picture?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
]
REPLIES = ["Valkey is fast.", "A test pattern."]


@dataclass
class Target:
    """A server (standalone or cluster) with a test client, and the storages made on it (closed at teardown)."""

    url: str
    client: Any  # decode_responses=True: valkey.Valkey or ValkeyCluster
    storages: list[ValkeyStorage] = field(default_factory=list)

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, ValkeyCluster)

    def cli(self, *args: str, input: str | None = None) -> Any:
        return invoke(*args, "--url", self.url, input=input)

    def storage(self, **options: Any) -> ValkeyStorage:
        client = valkey.asyncio.ValkeyCluster.from_url(self.url) if self.cluster else valkey.asyncio.from_url(self.url)
        self.storages.append(ValkeyStorage(client, ttl=options.pop("ttl", 3600), **options))
        return self.storages[-1]

    def snapshot_session(
        self, session_id: str, agents: tuple[str, ...] = ("assistant",), storage: ValkeyStorage | None = None
    ) -> SnapshotSessionManager:
        """Two turns per agent through the SDK, a checkpoint after each (so two checkpoints), and a stash entry."""
        storage = storage or self.storage()
        manager = SnapshotSessionManager(session_id, storage=storage, snapshot_trigger=lambda agent_data, **_: True)
        for agent_id in agents:
            agent = Agent(
                agent_id=agent_id, model=ScriptedModel(REPLIES), session_manager=manager, callback_handler=None
            )
            agent.state.set("stage", "draft")
            for turn in TURNS:
                agent(turn)
            asyncio.run(Stash(storage, session_id, agent_id).store("block", 0, b'{"offloaded": "tool output"}'))
        return manager

    def manager_session(self, session_id: str) -> None:
        """The same conversation through ValkeySessionManager."""
        agent = Agent(
            agent_id="assistant",
            model=ScriptedModel(REPLIES),
            session_manager=ValkeySessionManager(session_id, self.client),
            callback_handler=None,
        )
        for turn in TURNS:
            agent(turn)

    def keyspace(self) -> list[str]:
        if self.cluster:
            return sorted(self.client.keys("*", target_nodes=ValkeyCluster.PRIMARIES))
        return sorted(self.client.keys("*"))

    def pttls(self, keys: list[str]) -> list[int]:
        return [self.client.pttl(key) for key in keys]


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The same tests on a standalone server and on a 3-primary cluster (each emptied first)."""
    if request.param == "standalone":
        made = Target(request.getfixturevalue("server").url, request.getfixturevalue("client"))
    else:
        made = Target(request.getfixturevalue("cluster").url, request.getfixturevalue("cluster_client"))
    yield made
    for storage in made.storages:
        storage.close()


def session_keys(target: Target, session_id: str, prefix: str = "strands") -> list[str]:
    """Every key of the session's two storage groups, by the storage's own listing (its registry and indexes)."""
    storage = target.storage(key_prefix=prefix)
    keys = [*asyncio.run(storage.list(f"session/{session_id}/")), *asyncio.run(storage.list(f"context/{session_id}/"))]
    tag = "{%s}" if target.cluster else "%s"
    names = []
    for key in keys:
        group, _, rest = key.partition("/")[2].partition("/")
        head = f"{key.split('/')[0]}/{group}"
        names.append(f"{prefix}:{tag % head}/{rest}")
    indexes = [f"{prefix}:{tag % group}/" for group in (f"session/{session_id}", f"context/{session_id}")]
    return sorted(names + indexes)


# -- sessions ----------------------------------------------------------------------------------------------------


def test_sessions_lists_a_snapshot_session_with_layout_agents_checkpoints_size_and_ttl(target: Target) -> None:
    target.snapshot_session("user-43", agents=("researcher", "writer"))

    result = target.cli("sessions", "--json")

    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert (entry["session_id"], entry["layout"], entry["agents"], entry["checkpoints"]) == (
        "user-43",
        "snapshot",
        2,
        4,
    )
    values = [key for key in session_keys(target, "user-43") if not key.endswith("/")]
    assert entry["size"] == sum(target.client.strlen(key) for key in values)
    assert 3590 <= entry["ttl"] <= 3600
    latest = target.client.get(next(key for key in values if key.endswith("writer/snapshots/snapshot_latest.json")))
    assert entry["updated_at"] == json.loads(latest)["created_at"]


def test_sessions_table_shows_each_sessions_layout(target: Target) -> None:
    target.snapshot_session("user-43")
    target.manager_session("user-42")

    result = target.cli("sessions")

    header, *rows = result.stdout.splitlines()
    assert header.split() == ["SESSION", "LAYOUT", "AGENTS", "MESSAGES", "SIZE", "TTL", "UPDATED"]
    assert [row.split()[:4] for row in rows] == [["user-42", "manager", "1", "4"], ["user-43", "snapshot", "1", "-"]]


def test_sessions_of_the_snapshot_layout_come_from_the_registry_without_scan_or_keys(server: Any, client: Any) -> None:
    target = Target(server.url, client)
    for number in range(20):
        target.snapshot_session(f"s{number}")

    with CommandCounter(client) as counter:
        result = target.cli("sessions", "--layout", "snapshot", "--json")

    assert len(json.loads(result.stdout)) == 20
    assert counter.calls("scan", "keys") == 0
    assert counter.calls("zrangebylex") == 1  # the registry, once, whatever the number of sessions
    assert counter.calls("get") == 0  # the last save is read from the head of each latest snapshot (GETRANGE)
    for storage in target.storages:
        storage.close()


def test_sessions_match_filters_snapshot_sessions_by_glob(target: Target) -> None:
    storage = target.storage()
    for session_id in ("user-4", "user-42", "admin-1"):
        target.snapshot_session(session_id, storage=storage)

    result = target.cli("sessions", "--match", "user-4*", "--json")

    assert [entry["session_id"] for entry in json.loads(result.stdout)] == ["user-4", "user-42"]


def test_sessions_under_another_storage_prefix_need_storage_prefix(target: Target) -> None:
    target.snapshot_session("user-43", storage=target.storage(key_prefix="tenant-a"))

    default = target.cli("sessions", "--json")
    named = target.cli("sessions", "--storage-prefix", "tenant-a", "--json")

    assert json.loads(default.stdout) == []
    assert [entry["session_id"] for entry in json.loads(named.stdout)] == ["user-43"]


def test_sessions_lists_an_id_present_in_both_layouts_once_per_layout(target: Target) -> None:
    target.snapshot_session("user-42")
    target.manager_session("user-42")

    result = target.cli("sessions", "--json")

    assert [(entry["session_id"], entry["layout"]) for entry in json.loads(result.stdout)] == [
        ("user-42", "manager"),
        ("user-42", "snapshot"),
    ]


# -- show --------------------------------------------------------------------------------------------------------


def _conversation(stdout: str) -> list[str]:
    """The message lines of ``show``, each message's time (the manager layout's only) left out."""
    lines = [line for line in stdout.splitlines() if re.match(r"\s*#\d", line)]
    return [re.sub(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "", line) for line in lines]


def test_show_renders_the_latest_snapshot_as_the_other_layout_renders_the_same_conversation(target: Target) -> None:
    target.snapshot_session("snap")
    target.manager_session("log")

    snapshot = target.cli("show", "snap")
    manager = target.cli("show", "log")

    assert snapshot.exit_code == 0, snapshot.stderr
    assert _conversation(snapshot.stdout) == _conversation(manager.stdout) and len(_conversation(manager.stdout)) == 4
    assert "[image png, 1032 bytes]" in snapshot.stdout  # the SDK's base64 of bytes, decoded as it reads it
    assert 'state {"stage": "draft"}' in snapshot.stdout and "2 checkpoints" in snapshot.stdout


def test_show_renders_every_agent_and_the_stash_of_a_snapshot_session(target: Target) -> None:
    target.snapshot_session("user-43", agents=("researcher", "writer"))

    result = target.cli("show", "user-43")

    assert "snapshot layout" in result.stdout
    assert "agent researcher" in result.stdout and "agent writer" in result.stdout
    assert "context stash: 2 keys under context/user-43/" in result.stdout


def test_show_json_gives_each_agents_latest_snapshot_and_its_checkpoint_ids(target: Target) -> None:
    manager = target.snapshot_session("user-43")
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    expected_ids = asyncio.run(manager.list_snapshot_ids(agent))

    shown = json.loads(target.cli("show", "user-43", "--json").stdout)

    assert shown["layout"] == "snapshot"
    assert shown["agents"]["assistant"]["checkpoints"] == expected_ids
    assert shown["agents"]["assistant"]["latest"]["data"]["messages"][0]["content"] == [{"text": "Research Valkey."}]


def test_show_checkpoints_lists_the_snapshot_ids_in_order(target: Target) -> None:
    manager = target.snapshot_session("user-43")
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    expected_ids = asyncio.run(manager.list_snapshot_ids(agent))

    result = target.cli("show", "user-43", "--checkpoints", "--json")

    listed = json.loads(result.stdout)
    assert [entry["snapshot_id"] for entry in listed] == expected_ids and len(expected_ids) == 2
    assert listed[0]["created_at"] < listed[1]["created_at"]


def test_show_checkpoint_renders_that_checkpoint_not_the_latest(target: Target) -> None:
    manager = target.snapshot_session("user-43")
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    first = asyncio.run(manager.list_snapshot_ids(agent))[0]

    result = target.cli("show", "user-43", "--checkpoint", first)

    assert result.exit_code == 0, result.stderr
    assert _conversation(result.stdout) == ["#0 user       Research Valkey.", "#1 assistant  Valkey is fast."]


def test_show_an_unknown_checkpoint_is_not_found(target: Target) -> None:
    target.snapshot_session("user-43")

    result = target.cli("show", "user-43", "--checkpoint", "01a24a1c-f514-720a-a951-5ceb475b9ee0")

    assert result.exit_code == 1
    assert "has no checkpoint" in result.stderr and "--checkpoints" in result.stderr


# -- keys --------------------------------------------------------------------------------------------------------


def test_keys_lists_every_key_of_the_snapshots_and_the_stash_with_type_and_ttl(target: Target) -> None:
    target.snapshot_session("user-43")

    result = target.cli("keys", "user-43", "--json")

    listed = {entry["key"]: entry for entry in json.loads(result.stdout)}
    assert sorted(listed) == session_keys(target, "user-43")
    assert len(listed) == 6  # 2 indexes, latest, 2 checkpoints, 1 stash entry
    assert {entry["type"] for key, entry in listed.items() if key.endswith("/")} == {"zset"}
    assert all(3590 <= entry["ttl"] <= 3600 for entry in listed.values())


def test_keys_finds_the_snapshot_keys_without_scan_or_keys(server: Any, client: Any) -> None:
    target = Target(server.url, client)
    target.snapshot_session("user-43")

    with CommandCounter(client) as counter:
        result = target.cli("keys", "user-43")

    assert result.exit_code == 0 and "no KEYS, no SCAN" in result.stderr
    assert counter.calls("scan", "keys") == 0
    for storage in target.storages:
        storage.close()


# -- export ------------------------------------------------------------------------------------------------------


def test_export_writes_every_value_of_a_snapshot_session_byte_for_byte(target: Target) -> None:
    target.snapshot_session("user-43")

    result = target.cli("export", "user-43")

    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)["sessions"]
    assert entry["layout"] == "snapshot" and 3590_000 <= entry["ttl_ms"] <= 3600_000
    storage = target.storage()
    stored = {key: asyncio.run(storage.read(key)) for key in entry["values"]}
    assert {key: value.encode() for key, value in entry["values"].items()} == stored
    assert len(stored) == 4  # latest, 2 checkpoints, 1 stash entry
    assert "exported 1 snapshot session (4 values)" in result.stderr


def test_export_match_takes_sessions_of_both_layouts(target: Target) -> None:
    target.snapshot_session("user-43")
    target.manager_session("user-42")

    result = target.cli("export", "--match", "user-*")

    entries = json.loads(result.stdout)["sessions"]
    assert [(entry["session_id"], entry.get("layout", "manager")) for entry in entries] == [
        ("user-42", "manager"),
        ("user-43", "snapshot"),
    ]


def test_export_delete_import_gives_back_the_identical_snapshot_session(target: Target) -> None:
    target.snapshot_session("user-43")
    before = {key: target.client.get(key) for key in session_keys(target, "user-43") if not key.endswith("/")}
    exported = target.cli("export", "user-43").stdout
    target.cli("delete", "user-43", "--yes")

    result = target.cli("import", "-", input=exported)

    assert result.exit_code == 0, result.stderr
    assert "imported 1 snapshot session (4 values)" in result.stderr
    keys = session_keys(target, "user-43")  # found again through the registry and the indexes
    assert {key: target.client.get(key) for key in keys if not key.endswith("/")} == before
    pttls = target.pttls(keys)
    assert all(3_500_000 <= pttl <= 3_600_000 for pttl in pttls) and max(pttls) - min(pttls) <= 2000


def test_an_imported_snapshot_session_is_restored_by_the_sdk(target: Target) -> None:
    target.snapshot_session("user-43")
    exported = target.cli("export", "user-43").stdout
    target.cli("delete", "user-43", "--yes")
    target.cli("import", "-", input=exported)

    agent = Agent(
        agent_id="assistant",
        model=ScriptedModel(),
        session_manager=SnapshotSessionManager("user-43", storage=target.storage()),
        callback_handler=None,
    )

    assert [message["role"] for message in agent.messages] == ["user", "assistant"] * 2
    assert agent.state.get("stage") == "draft"


def test_import_refuses_an_existing_snapshot_session_without_force(target: Target) -> None:
    target.snapshot_session("user-43")
    exported = target.cli("export", "user-43").stdout
    before = {key: target.client.get(key) for key in target.keyspace() if target.client.type(key) == "string"}

    result = target.cli("import", "-", input=exported)

    assert result.exit_code == 4 and "user-43 exists; nothing imported" in result.stderr
    assert {key: target.client.get(key) for key in before} == before


def test_import_force_replaces_every_key_of_the_snapshot_session(target: Target) -> None:
    manager = target.snapshot_session("user-43")
    exported = target.cli("export", "user-43").stdout
    agent = Agent(agent_id="assistant", model=ScriptedModel(), session_manager=manager, callback_handler=None)
    agent("one more turn")  # a third checkpoint, not in the file
    asyncio.run(Stash(manager._raw_storage, "user-43", "assistant").store("later", 0, b"{}"))

    result = target.cli("import", "-", "--force", input=exported)

    assert result.exit_code == 0, result.stderr
    assert len(session_keys(target, "user-43")) == 6  # as exported: 2 indexes, latest, 2 checkpoints, 1 stash entry
    assert json.loads(target.cli("sessions", "--json").stdout)[0]["checkpoints"] == 2


def test_import_refuses_a_key_the_sdk_does_not_put_under_the_session(target: Target) -> None:
    target.snapshot_session("user-43")
    document = json.loads(target.cli("export", "user-43").stdout)
    target.cli("delete", "user-43", "--yes")
    document["sessions"][0]["values"]["session/user-44/scopes/agent/a/snapshots/snapshot_latest.json"] = "{}"

    result = target.cli("import", "-", input=json.dumps(document))

    assert result.exit_code == 2 and "'session/user-44/" in result.stderr and "no key" in result.stderr
    assert target.keyspace() == []


def test_import_leaves_a_value_storage_did_not_write_untouched(target: Target) -> None:
    target.snapshot_session("user-43")
    exported = target.cli("export", "user-43").stdout
    target.cli("delete", "user-43", "--yes")
    tag = "{session/user-43}" if target.cluster else "session/user-43"
    foreign = f"strands:{tag}/scopes/agent/assistant/snapshots/snapshot_latest.json"
    target.client.set(foreign, "another application's value")

    result = target.cli("import", "-", input=exported)

    assert result.exit_code == 4 and foreign in result.stderr
    assert target.keyspace() == [foreign] and target.client.get(foreign) == "another application's value"


def test_import_writes_a_snapshot_session_under_another_storage_prefix(target: Target) -> None:
    target.snapshot_session("user-43")
    exported = target.cli("export", "user-43").stdout

    result = target.cli("import", "-", "--storage-prefix", "tenant-b", input=exported)

    assert result.exit_code == 0, result.stderr
    assert len(session_keys(target, "user-43", prefix="tenant-b")) == 6
    listed = json.loads(target.cli("sessions", "--storage-prefix", "tenant-b", "--json").stdout)
    assert [(entry["session_id"], entry["checkpoints"]) for entry in listed] == [("user-43", 2)]


# -- delete, expire, persist ---------------------------------------------------------------------------------------


def test_delete_removes_the_snapshots_and_the_stash_and_nothing_else(target: Target) -> None:
    storage = target.storage()
    target.snapshot_session("user-43", storage=storage)
    target.snapshot_session("user-430", storage=storage)
    before = target.keyspace()
    expected = session_keys(target, "user-43")

    result = target.cli("delete", "user-43", "--yes")

    assert result.exit_code == 0, result.stderr
    assert "deleted snapshot session user-43 (6 keys)" in result.stdout
    removed = set(before) - set(target.keyspace())
    # Besides the session's keys, only a registry its groups were the last entries of (a cluster slot's) goes.
    assert sorted(key for key in removed if "//" not in key) == expected
    assert set(session_keys(target, "user-430")) <= set(target.keyspace())


def test_delete_leaves_the_storage_listing_nothing_of_the_session(target: Target) -> None:
    storage = target.storage()
    target.snapshot_session("user-43", storage=storage)
    target.snapshot_session("user-430", storage=storage)

    target.cli("delete", "user-43", "--yes")

    listed = asyncio.run(storage.list(""))
    assert listed and not [key for key in listed if "/user-43/" in key]
    assert [entry["session_id"] for entry in json.loads(target.cli("sessions", "--json").stdout)] == ["user-430"]


def test_delete_of_a_snapshot_session_is_what_the_sdk_restores_as_empty(target: Target) -> None:
    storage = target.storage()
    target.snapshot_session("user-43", storage=storage)

    target.cli("delete", "user-43", "--yes")

    agent = Agent(
        agent_id="assistant",
        model=ScriptedModel(),
        session_manager=SnapshotSessionManager("user-43", storage=storage),
        callback_handler=None,
    )
    assert agent.messages == []


def test_expire_gives_every_key_of_both_groups_one_new_deadline(target: Target) -> None:
    target.snapshot_session("user-43")
    keys = session_keys(target, "user-43")

    result = target.cli("expire", "user-43", "120")

    assert result.exit_code == 0, result.stderr
    assert "its 6 keys now expire in 120s" in result.stdout
    pttls = target.pttls(keys)
    assert all(110_000 <= pttl <= 120_000 for pttl in pttls) and max(pttls) - min(pttls) <= 2000


def test_persist_removes_the_expiry_of_every_key_of_both_groups(target: Target) -> None:
    target.snapshot_session("user-43")
    keys = session_keys(target, "user-43")

    result = target.cli("persist", "user-43")

    assert result.exit_code == 0, result.stderr
    assert "its 6 keys now never expire" in result.stdout
    assert target.pttls(keys) == [-1] * len(keys)


def test_expire_leaves_the_storage_sliding_the_new_deadline(target: Target) -> None:
    storage = target.storage(ttl=3600)
    target.snapshot_session("user-43", storage=storage)
    target.cli("expire", "user-43", "60")
    snapshots = [key for key in session_keys(target, "user-43") if "session/user-43" in key]  # the read's group

    asyncio.run(storage.read("session/user-43/scopes/agent/assistant/snapshots/snapshot_latest.json"))

    assert all(pttl > 3_500_000 for pttl in target.pttls(snapshots))  # 60 s < 90% of the storage's ttl: slid back


def test_commands_under_another_storage_prefix_find_the_session(target: Target) -> None:
    target.snapshot_session("user-43", storage=target.storage(key_prefix="tenant-a"))

    shown = target.cli("show", "user-43", "--storage-prefix", "tenant-a")
    missing = target.cli("show", "user-43")
    deleted = target.cli("delete", "user-43", "--yes", "--storage-prefix", "tenant-a")

    assert shown.exit_code == 0 and "storage prefix tenant-a" in shown.stdout
    assert missing.exit_code == 1 and "nor under storage prefix 'strands'" in missing.stderr
    assert deleted.exit_code == 0 and target.keyspace() == []


# -- one id in both layouts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["show"], ["keys"], ["export"], ["delete", "--yes"], ["expire", "60"], ["persist"]]
)
def test_an_id_in_both_layouts_is_refused_until_layout_picks_one(target: Target, command: list[str]) -> None:
    target.snapshot_session("user-42")
    target.manager_session("user-42")
    before = {key: target.client.pttl(key) for key in target.keyspace()}

    name, *rest = command
    result = target.cli(name, "user-42", *rest)

    assert result.exit_code == 2
    assert "exists in both layouts" in result.stderr and "--layout manager or --layout snapshot" in result.stderr
    assert {key: target.client.pttl(key) for key in target.keyspace()} == pytest.approx(before, abs=1000)


def test_layout_snapshot_deletes_only_the_snapshot_session_of_an_id_in_both(target: Target) -> None:
    target.snapshot_session("user-42")
    target.manager_session("user-42")
    manager_keys = [key for key in target.keyspace() if key.startswith("session:")]

    result = target.cli("delete", "user-42", "--yes", "--layout", "snapshot")

    assert result.exit_code == 0, result.stderr
    assert target.keyspace() == manager_keys


def test_layout_picks_which_session_show_renders_for_an_id_in_both(target: Target) -> None:
    target.snapshot_session("user-42")
    target.manager_session("user-42")

    snapshot = target.cli("show", "user-42", "--layout", "snapshot")
    manager = target.cli("show", "user-42", "--layout", "manager")

    assert "snapshot layout" in snapshot.stdout and "checkpoints" in snapshot.stdout
    assert "snapshot layout" not in manager.stdout and "#0" in manager.stdout


def test_checkpoints_of_a_manager_session_are_a_usage_error(target: Target) -> None:
    target.manager_session("user-42")

    result = target.cli("show", "user-42", "--checkpoints")

    assert result.exit_code == 2 and "is no snapshot session" in result.stderr


def test_a_swarm_of_a_snapshot_session_is_listed_and_shown(target: Target) -> None:
    manager = SnapshotSessionManager("team-1", storage=target.storage())
    node = Agent(name="node", agent_id="node", model=ScriptedModel(["done"]), callback_handler=None)
    Swarm([node], session_manager=manager)("task")

    listed = json.loads(target.cli("sessions", "--json").stdout)
    shown = target.cli("show", "team-1")

    assert [(entry["session_id"], entry["multi_agents"]) for entry in listed] == [("team-1", 1)]
    assert shown.exit_code == 0, shown.stderr
    assert "multi-agent default_swarm" in shown.stdout
