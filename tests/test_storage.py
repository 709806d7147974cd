"""ValkeyStorage implements strands.storage.Storage exactly as the SDK's own backends behave."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import valkey
import valkey.asyncio
from helpers import CommandCounter, populate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strands.storage import InMemoryStorage
from strands.storage.storage import _NAMESPACED, Storage, StorageSearchResult
from strands.types.exceptions import StorageError
from valkey.exceptions import ValkeyError

from strands_valkey_session_manager import ValkeyStorage

SNAPSHOT = "session/user-42/scopes/agent/assistant/snapshots/snapshot_latest.json"
BAD_KEYS = ["", "/", "//", "..", "a/../b", "../a", "a/..", "a\\b"]


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def test_it_is_a_strands_storage(make_storage) -> None:
    assert isinstance(make_storage(), Storage)
    assert isinstance(make_storage().namespace("a"), Storage)


def test_read_returns_the_bytes_written_byte_for_byte(make_storage) -> None:
    storage = make_storage()
    every_byte = bytes(range(256)) * 4
    run(storage.write(SNAPSHOT, every_byte))
    run(storage.write("empty", b""))

    assert run(storage.read(SNAPSHOT)) == every_byte
    assert run(storage.read("empty")) == b""


def test_bytes_that_are_not_utf8_round_trip_through_a_decoding_client(server, client: valkey.Valkey) -> None:
    storage = ValkeyStorage(valkey.asyncio.Valkey(port=server.port, decode_responses=True))
    try:
        run(storage.write(SNAPSHOT, b"\xff\xfe not UTF-8"))
        assert run(storage.read(SNAPSHOT)) == b"\xff\xfe not UTF-8"  # its own client reads bytes
        assert run(storage.list("")) == [SNAPSHOT]
    finally:
        storage.close()


def test_read_of_a_missing_key_returns_none(make_storage) -> None:
    storage = make_storage()
    run(storage.write("session/a/x", b"1"))

    assert run(storage.read("session/a/y")) is None  # missing key in an existing group
    assert run(storage.read("session/b/x")) is None  # missing group


def test_write_replaces_the_value_and_lists_the_key_once(make_storage) -> None:
    storage = make_storage()
    run(storage.write(SNAPSHOT, b"first"))
    run(storage.write(SNAPSHOT, b"second"))

    assert run(storage.read(SNAPSHOT)) == b"second"
    assert run(storage.list("")) == [SNAPSHOT]


def test_delete_removes_the_key_and_is_idempotent(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    run(storage.write(SNAPSHOT, b"x"))
    run(storage.delete(SNAPSHOT))
    run(storage.delete(SNAPSHOT))
    run(storage.delete("never/written/key"))

    assert run(storage.read(SNAPSHOT)) is None
    assert run(storage.list("")) == []
    assert client.dbsize() == 0  # the group's index and its registry entry went with its last key


def test_keys_are_normalised_like_the_sdk_backends(make_storage) -> None:
    storage = make_storage()
    run(storage.write("//session///a/x/", b"1"))

    assert run(storage.read("session/a/x")) == b"1"
    assert run(storage.list("/session//")) == ["session/a/x"]


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("operation", ["write", "read", "delete"])
def test_an_invalid_key_raises_storage_error_and_writes_nothing(
    make_storage, client: valkey.Valkey, operation: str, key: str
) -> None:
    storage = make_storage()
    call: Callable[..., Awaitable[Any]] = getattr(storage, operation)
    with pytest.raises(StorageError) as valkey_error:
        run(call(key, b"x") if operation == "write" else call(key))
    with pytest.raises(StorageError) as sdk_error:
        memory = getattr(InMemoryStorage(), operation)
        run(memory(key, b"x") if operation == "write" else memory(key))

    assert str(valkey_error.value) == str(sdk_error.value)
    assert client.dbsize() == 0


@pytest.mark.parametrize("prefix", ["..", "a/../", "a\\"])
def test_an_invalid_prefix_raises_storage_error(make_storage, prefix: str) -> None:
    with pytest.raises(StorageError, match="Invalid storage prefix"):
        run(make_storage().list(prefix))


KEYS = [
    "notes.md",
    "offloader/tooluse_1_0",
    "offloader/tooluse_12_0",
    "session/a/scopes/agent/x/snapshots/snapshot_latest.json",
    "session/a/scopes/agent/x/snapshots/immutable_history/snapshot_1.json",
    "session/ab/scopes/agent/x/snapshots/snapshot_latest.json",
    "session/b",
    "sessions/a/x",
    "context/a/scopes/agent/x/1.json",
]
PREFIXES = ["", "s", "session", "session/", "session/a", "session/a/", "session/a/scopes/agent/x/snapshots/i", "o", "x"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_returns_every_full_key_with_the_prefix_sorted(make_storage, prefix: str) -> None:
    storage = make_storage()
    for key in KEYS:
        run(storage.write(key, b"v"))

    assert run(storage.list(prefix)) == sorted(key for key in KEYS if key.startswith(prefix))


def test_keys_with_braces_percent_signs_spaces_and_unicode_round_trip(make_storage) -> None:
    storage = make_storage()
    keys = ["{a}/%7B/}", "a{/b}/c", "%/%25/%7D", "é/ü/ß ✓", "a b/c\td/e"]
    for number, key in enumerate(keys):
        run(storage.write(key, str(number).encode()))

    assert [run(storage.read(key)) for key in keys] == [str(number).encode() for number in range(len(keys))]
    assert run(storage.list("")) == sorted(keys)
    assert run(storage.list("%")) == ["%/%25/%7D"]
    assert run(storage.list("a{")) == ["a{/b}/c"]


def test_the_valkey_keys_follow_the_documented_layout(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(key_prefix="app")
    run(storage.write(SNAPSHOT, b"x"))
    run(storage.write("notes.md", b"y"))

    assert sorted(client.keys("*")) == [
        "app://deadlines",
        "app://groups",
        "app:notes.md",
        "app:notes.md/",
        "app:session/user-42/",
        f"app:{SNAPSHOT}",
    ]
    assert client.get(f"app:{SNAPSHOT}") == "x"
    assert client.zrange("app:session/user-42/", 0, -1) == [SNAPSHOT]
    assert client.zrange("app://groups", 0, -1) == ["notes.md", "session/user-42"]


def test_namespaces_scope_keys_and_nest(make_storage) -> None:
    storage = make_storage()
    tenant = storage.namespace("/tenant-a/")
    nested = tenant.namespace("session/x")
    run(nested.write("snapshot.json", b"1"))
    run(storage.write("tenant-b/session/x/snapshot.json", b"2"))

    assert getattr(tenant, "_namespaced", None) is _NAMESPACED
    assert run(storage.list("")) == ["tenant-a/session/x/snapshot.json", "tenant-b/session/x/snapshot.json"]
    assert run(tenant.list("")) == ["session/x/snapshot.json"]
    assert run(nested.list("")) == ["snapshot.json"]
    assert run(tenant.read("session/x/snapshot.json")) == b"1"
    run(nested.delete("snapshot.json"))
    assert run(storage.list("")) == ["tenant-b/session/x/snapshot.json"]


def test_a_namespace_searches_only_its_own_keys(make_storage) -> None:
    storage = make_storage()
    run(storage.write("memory/a/dark-mode.md", b"the toggle lives in settings"))
    run(storage.write("memory/b/dark-mode.md", b"the toggle lives in settings"))

    found = run(storage.namespace("memory/a").search("dark mode toggle"))

    assert [(result.key, result.score) for result in found] == [("dark-mode.md", 3)]


def test_search_gives_what_the_sdk_keyword_search_gives(make_storage) -> None:
    documents = {
        "memory/prefs/ui.md": b"User prefers dark mode and a compact toggle bar",
        "memory/prefs/food.md": b"Vegetarian, no mushrooms",
        "memory/notes/dark.md": b"Dark roast coffee",
        "session/a/snapshot.json": b'{"text": "mode toggle"}',
        "blob.bin": bytes([0xFF, 0xFE]) + b" dark",
    }
    storage, memory = make_storage(), InMemoryStorage()
    for key, value in documents.items():
        run(storage.write(key, value))
        run(memory.write(key, value))

    for query in ["dark mode toggle", "vegetarian mushrooms", "the a is", "coffee", "md"]:
        assert run(storage.search(query)) == run(memory.search(query)), query


def test_search_reads_values_with_plain_gets_that_slide_no_expiry(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=3600)
    for number in range(300):
        run(storage.write(f"memory/store/{number}.md", b"needle"))

    with CommandCounter(client) as counter:
        found = run(storage.search("needle"))

    assert len(found) == 300
    assert counter.calls("get") == 300
    assert counter.calls("evalsha") == 1  # the listing; no read script, which would slide the group's expiry
    assert counter.calls("pexpiretime", "pexpireat") == 0


# -- parity with InMemoryStorage ----------------------------------------------------------------------------------


async def scripted_scenario(storage: Storage) -> list[Any]:
    """Drive a storage through writes, overwrites, deletes, namespaces, bad keys; record all it shows."""
    seen: list[Any] = []
    keys = [*KEYS, "a{b}/c%d/e", "é/x", "session/a/scopes/agent/y/snapshots/snapshot_latest.json"]
    for number, key in enumerate(keys):
        await storage.write(key, f"value {number} of {key}".encode())
    await storage.write(KEYS[3], b"overwritten")
    await storage.delete(KEYS[4])
    await storage.delete("never/written")
    scoped = storage.namespace("session").namespace("a")  # type: ignore[attr-defined]
    await scoped.write("scopes/agent/z/snapshots/snapshot_latest.json", b"through a namespace")
    await scoped.delete("scopes/agent/y/snapshots/snapshot_latest.json")
    for bad in BAD_KEYS:
        try:
            await storage.write(bad, b"x")
        except StorageError as error:
            seen.append(("rejected", bad, str(error)))
    for prefix in [*PREFIXES, "a{", "é", "session/a/scopes/agent/z/"]:
        listed = await storage.list(prefix)
        seen.append(("list", prefix, listed, [await storage.read(key) for key in listed]))
    seen.append(("scoped list", await scoped.list(""), await scoped.list("scopes/agent/z")))
    for query in ["value session", "overwritten", "namespace through", "offloader tooluse"]:
        seen.append(("search", query, await storage.search(query), await scoped.search(query)))
    return seen


def test_the_scripted_scenario_shows_the_same_on_valkey_as_in_memory(make_storage) -> None:
    assert run(scripted_scenario(make_storage())) == run(scripted_scenario(InMemoryStorage()))


SEGMENT = st.sampled_from(["a", "b", "ab", "{", "}", "%", "%7B", "é", "..", " ", "x.md", "", "\\"])
KEY = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)
OPERATION = st.one_of(
    st.tuples(st.just("write"), KEY, st.binary(max_size=8)),
    st.tuples(st.just("delete"), KEY),
    st.tuples(st.just("read"), KEY),
    st.tuples(st.just("list"), KEY | st.just("")),
)


async def replay(storage: Storage, operations: list[tuple[Any, ...]]) -> list[Any]:
    seen: list[Any] = []
    for name, *args in operations:
        try:
            seen.append(await getattr(storage, name)(*args))
        except StorageError as error:
            seen.append(("error", str(error)))
    seen.append(await storage.list(""))
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATION, max_size=25))
def test_any_sequence_of_operations_shows_the_same_on_valkey_as_in_memory(
    make_storage, client: valkey.Valkey, operations: list[tuple[Any, ...]]
) -> None:
    client.flushall()
    assert run(replay(make_storage(), operations)) == run(replay(InMemoryStorage(), operations))


# -- efficiency -----------------------------------------------------------------------------------------------------


def test_each_write_read_and_delete_is_one_script_call(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=3600)
    run(storage.write(SNAPSHOT, b"warm"))  # the group exists: steady state

    for operation in (storage.write(SNAPSHOT, b"x"), storage.read(SNAPSHOT), storage.delete(SNAPSHOT)):
        with CommandCounter(client) as counter:
            run(operation)
        assert counter.calls("evalsha") == 1
        assert counter.calls("scan", "keys") == 0


def test_listing_within_a_group_is_one_command_whatever_else_the_server_holds(
    make_storage, client: valkey.Valkey
) -> None:
    storage = make_storage()
    for number in range(5):
        run(storage.write(f"session/a/scopes/agent/x/snapshots/immutable_history/snapshot_{number}.json", b"x"))
    populate(client, 20_000)
    for number in range(200):
        run(storage.write(f"session/other-{number}/x", b"x"))

    with CommandCounter(client) as counter:
        listed = run(storage.list("session/a/scopes/agent/x/snapshots/immutable_history/"))

    assert len(listed) == 5
    assert counter.counts == {"zrangebylex": 1}


def test_listing_above_groups_reads_the_registry_then_only_matching_groups(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    for number in range(50):
        run(storage.write(f"session/s{number}/x", b"x"))
        run(storage.write(f"context/s{number}/x", b"x"))

    with CommandCounter(client) as counter:
        listed = run(storage.list("session/s1"))

    assert listed == sorted(f"session/s{n}/x" for n in range(50) if str(n).startswith("1"))
    # One script call: the registry, then one ZRANGEBYLEX per matching group.
    assert counter.counts == {"evalsha": 1, "zrangebylex": 1 + len(listed)}


# -- errors and clients ---------------------------------------------------------------------------------------------


def test_an_unreachable_server_raises_storage_error_naming_the_key() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    storage = ValkeyStorage(valkey.asyncio.Valkey(port=port, socket_connect_timeout=1, retry_on_timeout=False))
    try:
        with pytest.raises(StorageError, match=f"key=<{SNAPSHOT}> | write failed") as error:
            run(storage.write(SNAPSHOT, b"x"))
        assert isinstance(error.value.__cause__, ValkeyError)
    finally:
        storage.close()


def test_a_value_of_another_valkey_type_raises_storage_error(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    run(storage.write(SNAPSHOT, b"x"))
    client.delete(f"strands:{SNAPSHOT}")
    client.hset(f"strands:{SNAPSHOT}", "field", "value")

    with pytest.raises(StorageError, match="read failed.*WRONGTYPE"):
        run(storage.read(SNAPSHOT))


def test_a_synchronous_client_is_refused_with_what_to_pass_instead(server) -> None:
    with pytest.raises(TypeError, match=r"valkey\.asyncio\.Valkey"):
        ValkeyStorage(server.client())


def test_a_client_whose_settings_cannot_be_copied_is_refused_up_front(server) -> None:
    sentinel = valkey.asyncio.Sentinel([("127.0.0.1", server.port)])

    with pytest.raises(TypeError, match="cannot copy this client's connection settings"):
        ValkeyStorage(sentinel.master_for("mymaster"))


def test_a_value_written_is_visible_to_another_storage_instance(make_storage) -> None:
    run(make_storage().write(SNAPSHOT, b"shared"))

    assert run(make_storage().read(SNAPSHOT)) == b"shared"
    assert run(make_storage(key_prefix="other").read(SNAPSHOT)) is None


def test_search_result_is_the_sdk_result_type(make_storage) -> None:
    storage = make_storage()
    run(storage.write("a/b/c.md", b"needle"))

    (result,) = run(storage.search("needle"))

    assert result == StorageSearchResult(key="a/b/c.md", score=1, data=b"needle")
