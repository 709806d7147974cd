"""ValkeyStorage works from any event loop and thread the SDK calls it from, and under concurrent writers."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import valkey
import valkey.asyncio

from strands_valkey_session_manager import ValkeyStorage

GROUP = "session/user-42"


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def storage_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "valkey-storage"]


def test_one_storage_serves_one_short_lived_event_loop_after_another(make_storage) -> None:
    storage = make_storage()
    for number in range(20):  # what a synchronous agent does: asyncio.run in a worker thread, every call
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, storage.write(f"{GROUP}/{number}", b"x")).result()

    assert len(run(storage.list(f"{GROUP}/"))) == 20


def test_one_storage_serves_many_threads_and_loops_at_once(make_storage) -> None:
    storage = make_storage()

    async def writer(thread: int) -> None:
        await asyncio.gather(*(storage.write(f"{GROUP}/{thread}-{n}", f"{thread}-{n}".encode()) for n in range(25)))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda thread: asyncio.run(writer(thread)), range(8)))

    listed = run(storage.list(f"{GROUP}/"))
    assert len(listed) == 200
    assert all(run(storage.read(key)) == key.rsplit("/", 1)[1].encode() for key in listed[::17])


def test_the_given_client_is_left_alone_and_stays_usable_on_its_own_loop(server, make_storage) -> None:
    client = valkey.asyncio.Valkey(port=server.port)
    storage = ValkeyStorage(client)
    try:

        async def mine() -> Any:
            await storage.write(f"{GROUP}/x", b"from storage")
            value = await client.get(f"strands:{GROUP}/x")  # the owner's own use, on the owner's loop
            await client.aclose()
            return value

        assert asyncio.run(mine()) == b"from storage"
        assert run(storage.read(f"{GROUP}/x")) == b"from storage"  # another loop: still fine
    finally:
        storage.close()


@pytest.mark.valkey_py_only  # counts its I/O thread
def test_close_disconnects_stops_the_io_thread_and_the_next_use_reconnects(make_storage, client: valkey.Valkey) -> None:
    before, connected = len(storage_threads()), len(client.client_list())
    storage = make_storage()

    async def burst() -> None:  # concurrent writes: the storage opens several connections
        await asyncio.gather(*(storage.write(f"{GROUP}/{n}", b"x") for n in range(10)))

    asyncio.run(burst())
    assert len(storage_threads()) == before + 1
    assert len(client.client_list()) > connected

    storage.close()
    assert len(storage_threads()) == before
    assert len(client.client_list()) == connected
    assert run(storage.read(f"{GROUP}/9")) == b"x"
    assert len(storage_threads()) == before + 1


@pytest.mark.valkey_py_only  # counts its I/O thread
def test_a_namespace_shares_its_storage_connection(make_storage) -> None:
    before = len(storage_threads())
    storage = make_storage()
    run(storage.namespace("a").write("b/c", b"x"))
    run(storage.namespace("d").namespace("e").write("f", b"y"))

    assert len(storage_threads()) == before + 1
    assert run(storage.list("")) == ["a/b/c", "d/e/f"]


def test_concurrent_writers_of_one_group_lose_no_key(server, make_storage, client: valkey.Valkey) -> None:
    writers = [make_storage(ttl=3600) for _ in range(6)]

    def write_all(writer: int) -> None:
        for number in range(30):
            run(writers[writer].write(f"{GROUP}/w{writer}/{number}", b"x"))
            if number % 3 == 0:
                run(writers[writer].delete(f"{GROUP}/w{writer}/{number}"))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write_all, range(6)))

    listed = run(writers[0].list(""))
    assert listed == sorted(f"{GROUP}/w{w}/{n}" for w in range(6) for n in range(30) if n % 3)
    values = {key for key in client.keys("strands:*") if not key.endswith("/") and "//" not in key}
    assert values == {f"strands:{key}" for key in listed}  # the index lists exactly the values stored
    assert len({client.pexpiretime(key) for key in [*values, f"strands:{GROUP}/"]}) == 1


def test_concurrent_overwrites_of_one_key_leave_one_whole_value(make_storage) -> None:
    writers = [make_storage() for _ in range(4)]
    key = f"{GROUP}/scopes/agent/a/snapshots/snapshot_latest.json"

    def overwrite(writer: int) -> None:
        for number in range(40):
            run(writers[writer].write(key, f"{writer}:{number}".encode() * 1000))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(overwrite, range(4)))

    value = run(writers[0].read(key))
    assert value in {f"{writer}:39".encode() * 1000 for writer in range(4)}
    assert run(writers[0].list("")) == [key]
