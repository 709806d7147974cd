"""Owners: a session bound to its owner, the owner's sessions listed (no SCAN, bounded round trips) and erased."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import valkey
import valkey.asyncio
from helpers import CommandCounter, CountingConnection, counting_client, wait_until
from strands import Agent
from strands.types.exceptions import SessionException
from valkey.client import NEVER_DECODE
from valkey.cluster import ValkeyCluster

from strands_valkey_session_manager import (
    Keyring,
    SessionAccessError,
    SessionDirectory,
    ValkeySessionManager,
    directory,
)
from strands_valkey_session_manager.keys import KeySchema
from strands_valkey_session_manager.testing.cluster import LocalCluster
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

#: Every manager these tests build runs once on a synchronous client, once on an asyncio one (conftest).
pytestmark = pytest.mark.usefixtures("client_kind")

KEYS = KeySchema()


def every_key(client: Any, pattern: str = "*") -> dict[str, Any]:
    """Every key on the server (SCAN: in tests only) with its value (DUMP) and deadline."""
    found = {}
    for key in client.scan_iter(match=pattern, count=1000):
        found[key] = (client.dump(key), client.pexpiretime(key))
    return found


def ids(sessions: list[directory.SessionInfo]) -> list[str]:
    return [session.session_id for session in sessions]


def listing(client: Any, owner: str, limit: int = 1000) -> list[str]:
    return ids(SessionDirectory(client).list(owner, limit=limit)[0])


# -- owners -------------------------------------------------------------------------------


def test_a_new_session_carries_its_owner_in_its_record(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    assert json.loads(client.get("session:chat-1"))["owner"] == "alice"
    assert listing(client, "alice") == ["chat-1"]


def test_another_owner_is_refused_and_nothing_is_written(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    before = every_key(client)
    with pytest.raises(SessionAccessError) as refused:
        ValkeySessionManager("chat-1", client, owner="bob")
    assert isinstance(refused.value, SessionException) and isinstance(refused.value, PermissionError)
    assert "alice" not in str(refused.value) and "chat-1" in str(refused.value)
    assert every_key(client) == before
    assert listing(client, "bob") == []


def test_an_unowned_session_is_refused_to_an_owner_with_the_same_words(client: valkey.Valkey) -> None:
    ValkeySessionManager("legacy", client)
    ValkeySessionManager("chat-1", client, owner="alice")
    before = every_key(client)
    with pytest.raises(SessionAccessError) as unowned:
        ValkeySessionManager("legacy", client, owner="bob")
    with pytest.raises(SessionAccessError) as owned:
        ValkeySessionManager("chat-1", client, owner="bob")
    assert str(unowned.value).replace("legacy", "chat-1") == str(owned.value)  # nothing tells them apart
    assert every_key(client) == before


def test_require_owner_refuses_a_manager_without_one_before_sending_anything(server: LocalValkey) -> None:
    client = counting_client(server.port)
    CountingConnection.round_trips = 0
    with pytest.raises(ValueError, match="owner"):
        ValkeySessionManager("chat-1", client, require_owner=True)
    assert CountingConnection.round_trips == 0


def test_an_owner_with_a_forbidden_character_is_a_value_error(client: valkey.Valkey) -> None:
    with pytest.raises(ValueError, match="owner"):
        ValkeySessionManager("chat-1", client, owner="a:b")
    assert client.dbsize() == 0


def test_an_owned_session_opened_without_an_owner_keeps_its_listing(client: valkey.Valkey, make_agent) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    ValkeySessionManager("chat-2", client, owner="alice")
    agent = make_agent(ValkeySessionManager("chat-1", client))  # an admin tool: no owner given, not required
    agent("hello")
    assert listing(client, "alice") == ["chat-1", "chat-2"]  # its writes moved it to the top
    assert json.loads(client.get("session:chat-1"))["owner"] == "alice"


# -- listing ------------------------------------------------------------------------------


def test_a_listing_item_has_title_agents_counts_times_and_expiry(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager("chat-1", client, owner="alice", ttl=600)
    make_agent(manager, agent_id="planner")("  Plan a\n trip to Lisbon " + "and Porto " * 20)
    make_agent(manager, agent_id="writer")("Write it up")
    (item,), cursor = SessionDirectory(client).list("alice")
    assert cursor is None
    assert item.session_id == "chat-1" and item.agents == ["planner", "writer"] and item.message_count == 4
    assert item.title is not None and item.title.startswith("Plan a trip to Lisbon and Porto")
    assert len(item.title) == directory.TITLE_LENGTH and item.title.endswith("…")
    assert item.created_at == json.loads(client.get("session:chat-1"))["created_at"]
    assert item.updated_at >= item.created_at[:23]
    assert 590 <= item.expires_in <= 600
    manager.set_title("Lisbon")
    assert SessionDirectory(client).list("alice")[0][0].title == "Lisbon"


def test_a_session_without_ttl_never_expires_nor_do_its_owners_keys(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice", ttl=None)
    assert SessionDirectory(client).list("alice")[0][0].expires_in is None
    assert client.pttl(KEYS.owner("alice")) == -1


def test_pages_come_most_recently_used_first_among_many_keys_without_scan(
    server: LocalValkey, client: valkey.Valkey
) -> None:
    client.execute_command("DEBUG", "POPULATE", 100_000, "unrelated")
    for n in range(40):
        ValkeySessionManager(f"other-{n}", client, owner=f"user-{n % 4}")
    for n in range(1000):
        ValkeySessionManager(f"chat-{n:04d}", client, owner="alice")
    last = client.zscore(KEYS.owner("alice"), "chat-0999")
    wait_until(lambda: int(client.time()[0]) * 1000 + client.time()[1] // 1000 > last, what="the next millisecond")
    ValkeySessionManager("chat-0500", client, owner="alice")  # opened again: used last
    expected = ["chat-0500", *(f"chat-{n:04d}" for n in reversed(range(1000)) if n != 500)]
    counting = counting_client(server.port)
    pages, cursor = [], None
    with CommandCounter(client) as counter:
        while True:
            CountingConnection.round_trips = 0
            page, cursor = SessionDirectory(counting).list("alice", limit=64, cursor=cursor)
            assert CountingConnection.round_trips <= 3  # the page, the records, the message counts
            pages.append(page)
            if cursor is None:
                break
    assert [session_id for page in pages for session_id in ids(page)] == expected
    assert len(pages) == 16 and all(len(page) == 64 for page in pages[:-1])
    updated = [session.updated_at for page in pages for session in page]
    assert updated == sorted(updated, reverse=True)
    assert counter.calls("scan", "keys") == 0
    assert counter.calls("get") == 1000  # one record read per listed session, nothing per other key


def test_sessions_used_in_the_same_millisecond_page_without_loss_or_repeat(client: valkey.Valkey) -> None:
    owned = KEYS.owner("alice")
    for n in range(50):
        ValkeySessionManager(f"chat-{n:02d}", client, owner="alice")
    client.zadd(owned, {f"chat-{n:02d}": 1_000 for n in range(50)})  # one score for all: ties only
    seen, cursor = [], None
    while True:
        page, cursor = SessionDirectory(client).list("alice", limit=7, cursor=cursor)
        seen += ids(page)
        if cursor is None:
            break
    assert seen == [f"chat-{n:02d}" for n in reversed(range(50))]


def test_an_expired_session_leaves_the_listing_and_the_owners_keys(client: valkey.Valkey) -> None:
    ValkeySessionManager("short", client, owner="alice", ttl=1)
    ValkeySessionManager("long", client, owner="alice", ttl=60)
    wait_until(lambda: not client.exists("session:short"), timeout=5, what="the short session to expire")
    assert listing(client, "alice") == ["long"]
    assert client.zscore(KEYS.owner("alice"), "short") is None  # cleaned by that listing


def test_the_owners_keys_expire_with_the_last_session(client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager("chat-1", client, owner="alice", ttl=1))("hello")  # a title: both keys
    assert client.exists(KEYS.owner("alice"), KEYS.owner_titles("alice")) == 2
    session_deadline = client.pexpiretime("session:chat-1")
    owner_deadline = client.pexpiretime(KEYS.owner("alice"))
    assert session_deadline <= owner_deadline <= session_deadline + directory.MARGIN_MS + 100
    assert client.pexpiretime(KEYS.owner_titles("alice")) == owner_deadline
    wait_until(lambda: client.dbsize() == 0, timeout=6, what="every key to expire")


def test_a_deleted_session_leaves_the_listing_at_once(client: valkey.Valkey, make_agent) -> None:
    manager = ValkeySessionManager("chat-1", client, owner="alice")
    make_agent(manager)("hello")
    ValkeySessionManager("chat-2", client, owner="alice")
    manager.delete_session("chat-1")
    assert client.zrange(KEYS.owner("alice"), 0, -1) == ["chat-2"]
    assert client.hgetall(KEYS.owner_titles("alice")) == {}
    assert listing(client, "alice") == ["chat-2"]


def test_a_session_deleted_behind_the_listings_back_is_dropped_and_cleaned(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    ValkeySessionManager("chat-2", client, owner="alice")
    client.delete("session:chat-1")  # as a crash between the delete and the listing's update leaves it
    assert listing(client, "alice") == ["chat-2"]
    assert client.zrange(KEYS.owner("alice"), 0, -1) == ["chat-2"]


def test_a_session_id_taken_over_by_another_owner_leaves_the_first_owners_listing(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    client.delete("session:chat-1")
    ValkeySessionManager("chat-1", client, owner="bob")
    assert listing(client, "alice") == [] and listing(client, "bob") == ["chat-1"]


def test_a_turn_costs_no_more_commands_with_an_owner(client: valkey.Valkey, make_agent) -> None:
    def commands_for_turns(owner: str | None) -> dict[str, int]:
        agent = make_agent(ValkeySessionManager(f"s-{owner}", client, owner=owner))
        agent("first")
        with CommandCounter(client) as counter:
            for n in range(20):
                agent(f"turn {n}")
        return counter.counts

    assert commands_for_turns("alice") == commands_for_turns(None)


def test_bad_arguments_are_value_errors(client: valkey.Valkey) -> None:
    found = SessionDirectory(client)
    for call in (
        lambda: found.list("alice", limit=0),
        lambda: found.list("alice", limit=True),
        lambda: found.list("alice", cursor="nonsense"),
        lambda: found.list("al ice"),
        lambda: found.erase(""),
    ):
        with pytest.raises(ValueError):
            call()
    assert client.dbsize() == 0


# -- erasure ------------------------------------------------------------------------------


def _sessions_with_messages(client: Any, owner: str, count: int, make_agent: Callable[..., Agent]) -> None:
    for n in range(count):
        manager = ValkeySessionManager(f"{owner}-{n}", client, owner=owner, lock_timeout=1 if n % 2 else None)
        make_agent(manager, agent_id="a")(f"hello {n}")
        if n % 3 == 0:
            make_agent(manager, agent_id="b")("and you")


def test_erase_deletes_every_key_of_the_owner_and_nothing_else(client: valkey.Valkey, make_agent) -> None:
    _sessions_with_messages(client, "alice", 12, make_agent)
    _sessions_with_messages(client, "bob", 3, make_agent)
    bobs = every_key(client, "session:bob-*")
    assert SessionDirectory(client).erase("alice") == 12
    assert [key for key in every_key(client) if "alice" in key] == []
    assert every_key(client, "session:bob-*") == bobs
    assert listing(client, "bob") == ["bob-2", "bob-1", "bob-0"]
    assert SessionDirectory(client).erase("alice") == 0  # again: nothing left, nothing to do


def test_erase_spares_a_session_id_that_is_now_another_owners(client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    client.delete("session:chat-1")
    ValkeySessionManager("chat-1", client, owner="bob")
    assert SessionDirectory(client).erase("alice") == 0
    assert client.exists("session:chat-1") and listing(client, "bob") == ["chat-1"]


def test_a_writer_on_an_erased_session_is_refused_and_leaves_nothing(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("chat-1", client, owner="alice"))
    agent("hello")
    assert SessionDirectory(client).erase("alice") == 1
    with pytest.raises(SessionException):
        agent("still there?")
    assert every_key(client) == {}


# -- cluster: two slots, a crash between the steps, slots moving ------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from strands_valkey_session_manager import SessionDirectory, ValkeySessionManager, directory, scripts
    from strands_valkey_session_manager.testing.cluster import LocalCluster
    from valkey.cluster import ValkeyCluster

    client = ValkeyCluster.from_url(sys.argv[1], decode_responses=True)
    step = os.environ["CRASH_AT"]
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    if step == "open":  # the session is created, its owner's ZSET not yet told
        directory.Listing.opened = die
        ValkeySessionManager("chat-new", client, owner="alice")
    elif step == "erase":  # the first session deleted, nothing taken out of the owner's ZSET
        run_each = scripts.run_each
        def first_then_die(script, client, calls, again=None):
            run_each(script, client, calls[:1], again)
            die()
        scripts.run_each = first_then_die
        SessionDirectory(client).erase("alice")
    elif step == "delete":  # the session deleted, its owner's ZSET not yet told
        directory.Listing.deleted = die
        ValkeySessionManager("chat-0", client, owner="alice").delete_session("chat-0")
    """
)


def crash_child(cluster: LocalCluster, step: str) -> None:
    env = {**os.environ, "CRASH_AT": step}
    done = subprocess.run([sys.executable, "-c", CHILD, cluster.url], env=env, capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()


def test_a_crash_between_creating_a_session_and_listing_it(cluster: LocalCluster, cluster_client: ValkeyCluster):
    ValkeySessionManager("chat-0", cluster_client, owner="alice")
    crash_child(cluster, "open")
    assert cluster_client.exists("session:{chat-new}")
    assert listing(cluster_client, "alice") == ["chat-0"]  # not listed yet, and nothing breaks
    with pytest.raises(SessionAccessError):
        ValkeySessionManager("chat-new", cluster_client, owner="bob")  # bound all the same
    ValkeySessionManager("chat-new", cluster_client, owner="alice")  # opened again: listed again
    assert listing(cluster_client, "alice") == ["chat-new", "chat-0"]


def test_a_crash_between_deleting_a_session_and_unlisting_it(cluster: LocalCluster, cluster_client: ValkeyCluster):
    ValkeySessionManager("chat-0", cluster_client, owner="alice")
    ValkeySessionManager("chat-1", cluster_client, owner="alice")
    crash_child(cluster, "delete")
    assert not cluster_client.exists("session:{chat-0}")
    assert cluster_client.zscore(KEYS.owner("alice"), "chat-0") is not None  # the crash left it listed
    assert listing(cluster_client, "alice") == ["chat-1"]  # dropped, and cleaned
    assert cluster_client.zrange(KEYS.owner("alice"), 0, -1) == ["chat-1"]


def test_a_crash_during_an_erasure_is_finished_by_running_it_again(
    cluster: LocalCluster, cluster_client: ValkeyCluster, make_agent
) -> None:
    _sessions_with_messages(cluster_client, "alice", 5, make_agent)
    crash_child(cluster, "erase")
    assert len(listing(cluster_client, "alice")) == 4  # one gone, dropped from the listing
    assert SessionDirectory(cluster_client).erase("alice") == 4
    leftover = [key for node in cluster.primaries() for key in node.client().keys("*alice*")]
    assert leftover == []


def test_listing_touching_and_erasing_follow_slots_that_move(
    cluster: LocalCluster, cluster_client: ValkeyCluster, make_agent
) -> None:
    for n in range(3):
        make_agent(ValkeySessionManager(f"chat-{n}", cluster_client, owner="alice"))("hello")
    owners_slot = LocalCluster.session_slot("alice")  # the owner's keys: hash tag {alice}
    moving = [owners_slot, *(LocalCluster.session_slot(f"chat-{n}") for n in range(3))]
    seen: list[Any] = []
    threads = []

    def meanwhile(step: str) -> None:
        """While the slot is held open: a touch of the owner's keys, a turn in a session, a listing, in a thread."""
        n, agent_id = len(threads) % 3, f"helper-{len(threads)}"

        def use() -> None:
            try:
                manager = ValkeySessionManager(f"chat-{n}", cluster_client, owner="alice")  # its own: one per thread
                manager.set_title(f"during {step}")  # a touch, in the owner's slot (raises if it fails)
                make_agent(manager, agent_id=agent_id)(f"during {step}")  # writes in the session's slot
                seen.append(listing(cluster_client, "alice"))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                seen.append(error)

        threads.append(threading.Thread(target=use))
        threads[-1].start()
        threads[-1].join(timeout=1.0)  # done, or waiting for the slot: the migration goes on either way

    for slot in dict.fromkeys(moving):
        source = cluster.serving(slot)
        target = next(node for node in cluster.primaries() if node is not source)
        cluster.migrate_slot(slot, target, batch=1, between=meanwhile)
        cluster.migrate_slot(slot, source, batch=1, between=meanwhile)
    for thread in threads:
        thread.join(timeout=30)
    assert len(seen) == len(threads) >= 8
    assert all(isinstance(found, list) and sorted(found) == ["chat-0", "chat-1", "chat-2"] for found in seen), seen
    assert SessionDirectory(cluster_client).erase("alice") == 3
    assert [key for node in cluster.primaries() for key in node.client().keys("*")] == []


# -- the CLI ------------------------------------------------------------------------------


def test_cli_lists_an_owners_sessions_newest_first(cli, client: valkey.Valkey, make_agent) -> None:
    make_agent(ValkeySessionManager("chat-1", client, owner="alice"))("Trip to Lisbon")
    ValkeySessionManager("chat-2", client, owner="alice")
    ValkeySessionManager("chat-3", client, owner="bob")
    with CommandCounter(client) as counter:
        table = cli("sessions", "--owner", "alice")
        as_json = cli("sessions", "--owner", "alice", "--json")
    assert table.exit_code == 0, table.stderr
    assert table.stdout.index("chat-2") < table.stdout.index("chat-1") and "Trip to Lisbon" in table.stdout
    assert "chat-3" not in table.stdout
    found = json.loads(as_json.stdout)
    assert [item["session_id"] for item in found] == ["chat-2", "chat-1"]
    assert found[1]["title"] == "Trip to Lisbon" and found[1]["message_count"] == 2
    assert counter.calls("scan", "keys") == 0


def test_cli_erases_an_owner_when_confirmed_only(cli, client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-1", client, owner="alice")
    ValkeySessionManager("chat-2", client, owner="bob")
    refused = cli("delete", "--owner", "alice", input="n\n")
    assert refused.exit_code == 4 and client.exists("session:chat-1")
    done = cli("delete", "--owner", "alice", input="y\n")
    assert done.exit_code == 0, done.stderr
    assert "Erase every session of owner alice" in done.stderr and "erased 1 session of owner alice" in done.stdout
    assert sorted(client.keys("*")) == ["session:chat-2", KEYS.owner("bob")]
    assert cli("delete", "--owner", "alice", "chat-2", "--yes").exit_code == 2  # one or the other
    assert cli("sessions", "--owner", "a:b").exit_code == 2


def test_a_foreign_value_at_the_session_key_is_named_as_such_not_as_another_owners(client: valkey.Valkey) -> None:
    client.set("session:chat-1", json.dumps({"user": "someone", "cart": []}))  # another app's session:<id>
    with pytest.raises(SessionException, match="session:chat-1") as raised:
        ValkeySessionManager("chat-1", client, owner="alice")
    assert not isinstance(raised.value, SessionAccessError)
    assert json.loads(client.get("session:chat-1")) == {"user": "someone", "cart": []}


def test_from_url_takes_the_owner_options_and_names_a_misspelt_one(server: LocalValkey, client: valkey.Valkey) -> None:
    manager = ValkeySessionManager.from_url(server.url, session_id="chat-1", owner="alice", require_owner=True)
    manager.close()
    with pytest.raises(SessionAccessError):
        ValkeySessionManager.from_url(server.url, session_id="chat-1", owner="bob")
    with pytest.raises(TypeError, match="owner"):
        ValkeySessionManager.from_url(server.url, session_id="chat-2", ownr="alice")
    assert listing(client, "alice") == ["chat-1"] and not client.exists("session:chat-2")


def test_an_erasure_while_a_writer_runs_turns_refuses_it_and_leaves_nothing(client: valkey.Valkey, make_agent) -> None:
    agent = make_agent(ValkeySessionManager("chat-1", client, owner="alice"))
    turns: list[Any] = []

    def write() -> None:
        try:
            while len(turns) < 10_000:
                agent(f"turn {len(turns)}")
                turns.append(None)
        except Exception as error:  # noqa: BLE001 - the SDK may wrap it (a failure inside its event loop)
            turns.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    wait_until(lambda: len(turns) >= 3, what="the writer's first turns")
    assert SessionDirectory(client).erase("alice") == 1
    writer.join(timeout=30)
    error, causes = turns[-1], []
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(cause, SessionException) for cause in causes), causes  # its next write found no session
    assert every_key(client) == {}


@pytest.mark.parametrize("lock_timeout", [None, 1], ids=["keep-alive", "lock renewal carries it"])
def test_a_turn_longer_than_the_ttl_keeps_the_session_and_its_listing(
    client: valkey.Valkey, lock_timeout: float | None
) -> None:
    seen = []

    def thinking(messages: Any) -> str:
        time.sleep(2.5)  # the model's latency, longer than the ttl: the keep-alive moves the session's deadline
        seen.append((client.pexpiretime(KEYS.owner("alice")), client.pexpiretime("session:chat-1")))
        return "done"

    manager = ValkeySessionManager("chat-1", client, owner="alice", ttl=1, lock_timeout=lock_timeout, lock_lease=0.6)
    Agent(agent_id="a", model=ScriptedModel(thinking), session_manager=manager, callback_handler=None)("hello")
    ((owners, session),) = seen
    assert owners >= session > 0  # during the turn, the owner's keys outlived the session's moving deadline
    assert listing(client, "alice") == ["chat-1"]


def test_encrypted_sessions_are_bound_listed_and_erased_given_the_keyring(client: valkey.Valkey, make_agent) -> None:
    ring = Keyring({"k1": bytes(range(32))}, current="k1")
    make_agent(ValkeySessionManager("chat-1", client, owner="alice", encryption=ring))("Trip to Lisbon")
    assert b"alice" not in client.execute_command("GET", "session:chat-1", **{NEVER_DECODE: True})  # sealed
    with pytest.raises(SessionAccessError):
        ValkeySessionManager("chat-1", client, owner="bob", encryption=ring)
    with pytest.raises(SessionException):  # no keyring: it cannot tell whose the session is, and says so
        SessionDirectory(client).list("alice")
    assert client.zrange(KEYS.owner("alice"), 0, -1) == ["chat-1"]  # nothing was taken out for it
    (item,), _ = SessionDirectory(client, encryption=ring).list("alice")
    assert item.title is None and item.message_count == 2 and item.created_at  # no message text kept in clear
    assert not client.exists(KEYS.owner_titles("alice"))
    assert SessionDirectory(client, encryption=ring).erase("alice") == 1 and client.dbsize() == 0


def test_an_erasure_succeeds_while_the_owners_agents_keep_writing(client: valkey.Valkey, make_agent) -> None:
    agents = [make_agent(ValkeySessionManager(f"chat-{n}", client, owner="alice"), agent_id=f"a{n}") for n in range(3)]
    for agent in agents:
        agent("hello")
    stopped: list[BaseException] = []

    def talk(agent: Any) -> None:  # as fast as it can, until its session is gone
        try:
            for n in range(1_000_000):
                agent._session_manager.append_message({"role": "user", "content": [{"text": str(n)}]}, agent)
        except SessionException as error:
            stopped.append(error)

    writers = [threading.Thread(target=talk, args=(agent,)) for agent in agents]
    for writer in writers:
        writer.start()
    wait_until(lambda: all(client.zcard(f"session:chat-{n}:agent:a{n}:messages") > 50 for n in range(3)))

    erased = SessionDirectory(client).erase("alice")
    for writer in writers:
        writer.join()

    assert erased == 3 and len(stopped) == 3  # every writer was refused once its session was gone
    assert every_key(client) == {}


def test_cli_lists_and_erases_an_owners_encrypted_sessions_given_the_keyring(
    cli, client: valkey.Valkey, make_agent, tmp_path
) -> None:
    ring = Keyring({"k1": bytes(range(32))}, current="k1")
    make_agent(ValkeySessionManager("chat-1", client, owner="alice", encryption=ring))("Trip to Lisbon")
    path = tmp_path / "ring.json"
    path.write_text(json.dumps({"current": "k1", "keys": {"k1": base64.b64encode(bytes(range(32))).decode()}}))

    without = cli("sessions", "--owner", "alice")
    listed = cli("sessions", "--owner", "alice", "--json", "--keyring-file", str(path))
    erased = cli("delete", "--owner", "alice", "--yes", "--keyring-file", str(path))

    assert without.exit_code != 0 and "k1" in without.stderr  # it cannot tell whose the session is, and says why
    assert listed.exit_code == 0, listed.stderr
    assert [item["session_id"] for item in json.loads(listed.stdout)] == ["chat-1"]
    assert erased.exit_code == 0 and client.dbsize() == 0


@pytest.mark.sync_client_only  # it makes its own asyncio client
def test_an_awaited_logout_leaves_the_listing_before_it_returns(server: LocalValkey, client: valkey.Valkey) -> None:
    ValkeySessionManager("chat-2", client, owner="alice")

    async def logout() -> list[str]:
        mine = valkey.asyncio.Valkey(port=server.port)
        manager = await ValkeySessionManager.open("chat-1", mine, owner="alice")
        await manager.delete_session_async("chat-1")
        left = client.zrange(KEYS.owner("alice"), 0, -1)  # at once: no task left behind to do it
        await mine.aclose()
        return left

    assert asyncio.run(logout()) == ["chat-2"]
