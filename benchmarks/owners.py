"""An owner's listing and erasure (``SessionDirectory``), beside the floor and a SCAN-based listing.

``python -m benchmarks.owners [--server BINARY] [--repeats N]``: prints a Markdown table (docs/benchmarks.md).

- **list**: ``SessionDirectory.list(owner, limit=20)`` for owners of 10 / 1,000 / 100,000 sessions, all in one
  server (so every owner's listing runs beside 101,010 sessions and their keys).
- **floor**: what any listing of 20 known sessions pays at least: a bare ``ZRANGE`` of a ZSET of ids, then one
  ``MGET`` of the 20 session records (two round trips, nothing checked, no counts, no titles).
- **SCAN listing**: what apps without an index do: ``SCAN MATCH session:* COUNT 1000`` over the keyspace, a
  ``GET`` of each record found (pipelined per SCAN page), keep the owner's, sort by ``created_at``, first 20.
- **erase**: ``SessionDirectory.erase`` of an owner of 1,000 sessions (1 agent, 2 messages each), re-created
  untimed before each run; floor: one ``DEL`` of exactly those keys (known beforehand, pipelined by 1000).

Sessions are written as the library writes them (records with their owner, index, agent, message ids,
messages, the owner's ZSET and titles) with pipelines, not through 100,000 managers: the layout is the same.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from typing import Any

import valkey

from strands_valkey_session_manager import SessionDirectory, scripts
from strands_valkey_session_manager.keys import SESSION, KeySchema
from strands_valkey_session_manager.testing.server import LocalValkey

from .timing import interleaved, machine, machine_line, summary

KEYS = KeySchema()
OWNERS = {"owner-10": 10, "owner-1k": 1_000, "owner-100k": 100_000}
TTL_MS = 3_600_000


def session_keys(session_id: str) -> list[str]:
    """Every key one seeded session has."""
    return [
        KEYS.session(session_id),
        KEYS.index(session_id),
        KEYS.agent(session_id, "a"),
        KEYS.messages(session_id, "a"),
        *KEYS.message_keys(session_id, "a", [0, 1]),
    ]


def seed(client: valkey.Valkey, owner: str, count: int) -> list[str]:
    """Give ``owner`` ``count`` sessions laid out as the library lays them out; returns their keys."""
    now = int(time.time() * 1000)
    written: list[str] = []
    for start in range(0, count, 5_000):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + 5_000, count)):
            sid = f"{owner}-{n}"
            stamp = "2026-01-01T00:00:00+00:00"
            record = {"session_id": sid, "session_type": "AGENT", "created_at": stamp, "updated_at": stamp}
            pipe.set(KEYS.session(sid), json.dumps({**record, "owner": owner}), px=TTL_MS)
            pipe.sadd(KEYS.index(sid), "agent:a")
            pipe.set(KEYS.agent(sid, "a"), json.dumps({"agent_id": "a", "state": {}, "created_at": stamp}), px=TTL_MS)
            pipe.zadd(KEYS.messages(sid, "a"), {"0": 0, "1": 1})
            for message_id, text in ((0, f"question {n}"), (1, "answer")):
                message = {"message": {"role": "user", "content": [{"text": text}]}, "message_id": message_id}
                pipe.set(KEYS.message(sid, "a", message_id), json.dumps(message), px=TTL_MS)
            for key in (KEYS.index(sid), KEYS.messages(sid, "a")):
                pipe.pexpire(key, TTL_MS)
            pipe.zadd(KEYS.owner(owner), {sid: now + n})
            pipe.hset(KEYS.owner_titles(owner), sid, f"question {n}")
            written += session_keys(sid)
        pipe.execute()
    client.pexpire(KEYS.owner(owner), TTL_MS + 2000)
    client.pexpire(KEYS.owner_titles(owner), TTL_MS + 2000)
    return [*written, KEYS.owner(owner), KEYS.owner_titles(owner)]


def floor(client: valkey.Valkey, owner: str) -> list[Any]:
    """Read a page the least any store can: a bare ZRANGE of the 20 newest ids, then one MGET of their records."""
    ids = client.zrange(KEYS.owner(owner), 0, 19, desc=True)
    return list(client.mget([KEYS.session(sid) for sid in ids]))


def scan_listing(client: valkey.Valkey, owner: str) -> list[dict[str, Any]]:
    """List as an app without an index does: SCAN every session record, GET each, keep the owner's."""
    found = []
    cursor = 0
    while True:
        cursor, matched = client.scan(cursor, match=KEYS.session_pattern(), count=1000)
        keys = [key for key in matched if (parsed := KEYS.parse(key)) is not None and parsed.kind == SESSION]
        records = client.mget(keys) if keys else []
        for raw in records:
            record = json.loads(raw) if raw else None
            if isinstance(record, dict) and record.get("owner") == owner:
                found.append(record)
        if cursor == 0:
            break
    return sorted(found, key=lambda record: record["created_at"], reverse=True)[:20]


def main(argv: list[str] | None = None) -> None:
    """Seed the owners, time the listings and the erasure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="valkey-server")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--scan-repeats", type=int, default=3)
    options = parser.parse_args(argv)
    with LocalValkey(binary=options.server) as server:
        client = server.client()
        scripts.load(client)
        info = machine(client)
        for owner, count in OWNERS.items():
            seed(client, owner, count)
        directory = SessionDirectory(client)
        rows = []
        for owner, count in OWNERS.items():
            cases: dict[str, Callable[[], Any]] = {
                "list": functools.partial(directory.list, owner, limit=20),
                "floor": functools.partial(floor, client, owner),
            }
            fast = {name: summary(values) for name, values in interleaved(cases, options.repeats).items()}
            assert len(directory.list(owner, limit=20)[0]) == min(20, count)
            rows.append((owner, count, fast))
        scan = summary(interleaved({"scan": lambda: scan_listing(client, "owner-10")}, options.scan_repeats)["scan"])
        total_keys = client.dbsize()

        erase_keys: list[str] = []

        def reseed(name: str) -> None:
            erase_keys[:] = seed(client, "owner-erase", 1_000)

        def bare_delete() -> None:
            for start in range(0, len(erase_keys), 1000):
                client.delete(*erase_keys[start : start + 1000])

        erase = interleaved(
            {"erase": lambda: directory.erase("owner-erase"), "floor": bare_delete},
            max(3, options.repeats // 3),
            setup=reseed,
        )
        erased = {name: summary(values) for name, values in erase.items()}
    print(f"Listing a page of 20 ({total_keys:,} keys in the server), median ms (p99):\n")
    print("| owner's sessions | SessionDirectory.list | floor: ZRANGE + MGET | ratio | SCAN listing |")
    print("|---|---|---|---|---|")
    for _, count, fast in rows:
        lst, flr = fast["list"], fast["floor"]
        print(
            f"| {count:,} | {lst['median_ms']:.3f} ({lst['p99_ms']:.3f}) | {flr['median_ms']:.3f} ({flr['p99_ms']:.3f})"
            f" | {lst['median_ms'] / flr['median_ms']:.2f}x | {scan['median_ms']:.0f} ({scan['p99_ms']:.0f}) |"
        )
    er, ef = erased["erase"], erased["floor"]
    print(
        f"\nErasing 1,000 sessions (6,002 keys): erase {er['median_ms']:.1f} ms (p99 {er['p99_ms']:.1f}), "
        f"bare DEL of the known keys {ef['median_ms']:.1f} ms (p99 {ef['p99_ms']:.1f}): "
        f"{er['median_ms'] / ef['median_ms']:.1f}x\n"
    )
    print(f"_{machine_line(info)}_")


if __name__ == "__main__":
    main()
