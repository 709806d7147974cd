"""ValkeyStorage expiry: one sliding deadline per group of keys, as the session manager has per session."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import valkey
from helpers import CommandCounter, wait_until

GROUP = "session/user-42"
LATEST = f"{GROUP}/scopes/agent/assistant/snapshots/snapshot_latest.json"
CHECKPOINT = f"{GROUP}/scopes/agent/assistant/snapshots/immutable_history/snapshot_1.json"


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def server_ms(client: valkey.Valkey) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def group_deadlines(client: valkey.Valkey, group: str = GROUP) -> dict[str, int]:
    """PEXPIRETIME of the group's index and of every value it lists."""
    index = f"strands:{group}/"
    keys = [index, *(f"strands:{key}" for key in client.zrange(index, 0, -1))]
    return {key: client.pexpiretime(key) for key in keys}


def test_without_ttl_no_key_expires(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage()
    run(storage.write(LATEST, b"x"))
    run(storage.write("notes.md", b"y"))

    assert {key: client.pttl(key) for key in client.keys("*")} == dict.fromkeys(client.keys("*"), -1)


def test_every_key_of_a_group_shares_the_deadline_a_new_key_included(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=60)
    run(storage.write(LATEST, b"x"))
    written_at = server_ms(client)
    wait_until(lambda: server_ms(client) > written_at + 5, what="the server clock to move on")
    run(storage.write(CHECKPOINT, b"y"))

    deadlines = group_deadlines(client)
    assert len(deadlines) == 3
    assert len(set(deadlines.values())) == 1  # the new key took the group's remaining life, not a fresh ttl
    assert client.pexpiretime("strands://groups") == next(iter(deadlines.values()))


def test_a_write_slides_the_whole_group_once_below_90_percent_of_ttl(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=timedelta(seconds=2))
    run(storage.write(LATEST, b"x"))
    first = group_deadlines(client)
    wait_until(lambda: client.pttl(f"strands:{GROUP}/") < 1800, what="the group's life to drop below 90%")
    before = server_ms(client)
    run(storage.write(CHECKPOINT, b"y"))

    deadlines = group_deadlines(client)
    assert len(set(deadlines.values())) == 1
    assert min(deadlines.values()) >= before + 2000 > max(first.values())


def test_a_read_slides_the_whole_group_once_below_90_percent_of_ttl(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=timedelta(seconds=2))
    run(storage.write(LATEST, b"x"))
    run(storage.write(CHECKPOINT, b"y"))
    wait_until(lambda: client.pttl(f"strands:{GROUP}/") < 1800, what="the group's life to drop below 90%")
    before = server_ms(client)

    assert run(storage.read(LATEST)) == b"x"
    deadlines = group_deadlines(client)
    assert len(set(deadlines.values())) == 1
    assert min(deadlines.values()) >= before + 2000
    assert client.zscore("strands://deadlines", GROUP) == min(deadlines.values())


def test_listing_and_searching_do_not_slide_expiry(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=timedelta(seconds=2))
    run(storage.write(LATEST, b"needle"))
    wait_until(lambda: client.pttl(f"strands:{GROUP}/") < 1800, what="the group's life to drop below 90%")
    before = group_deadlines(client)

    run(storage.list(""))
    run(storage.list(f"{GROUP}/"))
    run(storage.search("needle"))

    assert group_deadlines(client) == before


def test_commands_per_write_do_not_grow_with_the_group(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=3600)
    counts = []
    for size in (1, 100):
        for number in range(size):
            run(storage.write(f"{GROUP}/checkpoints/{size}-{number}", b"x"))
        with CommandCounter(client) as counter:
            run(storage.write(f"{GROUP}/checkpoints/{size}-last", b"x"))
        counts.append(counter.counts)

    assert counts[0] == counts[1]
    assert counts[0].get("zrange", 0) == 0  # no walk of the group: its deadline was not due


def test_groups_keep_their_own_deadlines(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=60)
    run(storage.write(LATEST, b"x"))
    first = group_deadlines(client)
    written_at = server_ms(client)
    wait_until(lambda: server_ms(client) > written_at + 5, what="the server clock to move on")
    run(storage.write("session/other/x", b"y"))

    assert group_deadlines(client) == first
    assert client.pexpiretime("strands:session/other/x") > max(first.values())
    assert client.pexpiretime("strands://groups") == client.pexpiretime("strands:session/other/x")


def test_an_expired_group_is_gone_entirely(make_storage, client: valkey.Valkey) -> None:
    storage = make_storage(ttl=timedelta(milliseconds=300))
    run(storage.write(LATEST, b"x"))
    run(storage.write(CHECKPOINT, b"y"))
    run(storage.write("notes.md", b"z"))
    wait_until(lambda: client.pttl(f"strands:{GROUP}/") == -2, what="the group to expire")

    assert run(storage.list("")) in ([], ["notes.md"])  # notes.md is a group of its own, written later
    assert run(storage.read(LATEST)) is None
    assert run(storage.read(CHECKPOINT)) is None
    wait_until(lambda: client.dbsize() == 0, what="every key, the registry's included, to expire")


def test_a_new_group_drops_registry_entries_of_expired_groups(make_storage, client: valkey.Valkey) -> None:
    short, lasting = make_storage(ttl=timedelta(milliseconds=200)), make_storage(ttl=3600)
    run(short.write("session/brief/x", b"x"))
    run(lasting.write("session/lasting/x", b"x"))
    wait_until(lambda: client.pttl("strands:session/brief/") == -2, what="the short group to expire")
    assert "session/brief" in client.zrange("strands://groups", 0, -1)  # outlived its group, for now

    run(lasting.write("session/new/x", b"x"))

    assert client.zrange("strands://groups", 0, -1) == ["session/lasting", "session/new"]
    assert client.zrange("strands://deadlines", 0, -1) == ["session/lasting", "session/new"]


def test_a_storage_without_ttl_writing_into_an_expiring_group_keeps_its_deadline(
    make_storage, client: valkey.Valkey
) -> None:
    run(make_storage(ttl=60).write(LATEST, b"x"))
    run(make_storage().write(CHECKPOINT, b"y"))

    deadlines = group_deadlines(client)
    assert len(deadlines) == 3
    assert len(set(deadlines.values())) == 1
    assert min(deadlines.values()) > 0


@pytest.mark.parametrize("ttl", [0, -5, float("inf"), float("nan"), 10**30, timedelta.max, "60", True], ids=repr)
def test_an_unusable_ttl_is_refused_naming_the_range_before_anything_is_written(
    make_storage, client: valkey.Valkey, ttl: Any
) -> None:
    with pytest.raises(ValueError, match=r"^ttl=<.*> \| must be a positive number of seconds up to 315360000"):
        make_storage(ttl=ttl)
    assert client.dbsize() == 0
