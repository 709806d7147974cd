"""Stored values plain, compressed, encrypted or both: server memory, per-turn time in the hooks, restore time.

``python -m benchmarks.scenario_values [--quick] [--out docs]``: starts its own valkey-server, prints a Markdown
table and writes ``benchmarks-values.json``. Two deterministic transcripts, every setting measured side by side
in one run (turns and restores interleaved, in a shuffled order each round, so drift hits every setting alike):

- ``tool-heavy``: each turn a question, a tool call, its result (2-50 KB of JSON, log-uniform), and an answer. The
  results alternate between a web search (hits with titles, URLs, dates, scores and text snippets: prose drawn from
  an English word list with random names and numbers) and a records API (orders: ids, customers, addresses, line
  items, statuses, timestamps), the two kinds of tool output agents mostly store;
- ``chat``: each turn a short question and an answer of a few sentences.

Measures: ``MEMORY USAGE <key> SAMPLES 0`` per message key; the time a real ``Agent`` turn spends in the session
manager's hooks (append_message, sync_agent), median per turn; and the time to restore an agent of 1000 messages
(``Agent(session_manager=ValkeySessionManager(...))``), median of interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from strands import Agent, tool
from strands.agent.conversation_manager import NullConversationManager

from strands_valkey_session_manager import Keyring, ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

from .scenario_turn import HookTimer
from .timing import interleaved, machine, machine_line

KEYRING = Keyring({"bench": bytes(range(32))}, current="bench")
SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "gzip": {"compression": "gzip"},
    "zstd": {"compression": "zstd"},
    "encrypted": {"encryption": KEYRING},
    "zstd+encrypted": {"encryption": KEYRING, "compression": "zstd"},
}
AGENT_ID = "a"

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they you "
    "were her she there been one all we their has would when if so no what up out more can who some time them these "
    "other into only new could its also two like than then first any well over after most made where through back "
    "much before good very just people year work between state world still under last never same system data "
    "service server memory session agent model request response cluster latency price report market energy policy "
    "research health customer account payment order product shipping invoice release version update security"
).split()


def _text(rng: random.Random, words: int) -> str:
    """English-like text: common words, with a name or number now and then (as real text has)."""
    out = []
    for _ in range(words):
        roll = rng.random()
        if roll < 0.08:
            out.append("".join(rng.choice("bcdfghklmnprstvwz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))))
        elif roll < 0.12:
            out.append(str(rng.randint(1, 99999)))
        else:
            out.append(rng.choice(_WORDS))
    return " ".join(out).capitalize() + "."


CITIES = ("Berlin", "Lyon", "Austin", "Osaka", "Leeds")


def records_result(rng: random.Random, size: int) -> str:
    """Return an orders API's JSON result of about ``size`` bytes."""
    orders: list[dict[str, Any]] = []
    while len(json.dumps(orders)) < size:
        customer = _text(rng, 2).rstrip(".")
        orders.append(
            {
                "order_id": f"ord_{rng.getrandbits(40):010x}",
                "status": rng.choice(["pending", "paid", "shipped", "delivered", "refunded"]),
                "created_at": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
                "customer": {
                    "id": f"cus_{rng.getrandbits(32):08x}",
                    "name": customer,
                    "email": f"{customer.lower().replace(' ', '.')}@example.com",
                    "address": {
                        "city": rng.choice(["Berlin", "Lyon", "Austin", "Osaka", "Leeds"]),
                        "zip": rng.randint(10000, 99999),
                    },
                },
                "items": [
                    {
                        "sku": f"SKU-{rng.randint(1000, 9999)}",
                        "quantity": rng.randint(1, 5),
                        "unit_price": round(rng.uniform(2, 400), 2),
                    }
                    for _ in range(rng.randint(1, 4))
                ],
                "currency": "EUR",
                "url": f"https://api.example.com/v2/orders/{rng.getrandbits(40):010x}",
            }
        )
    return json.dumps({"object": "list", "has_more": True, "data": orders})


def tool_result(rng: random.Random, size: int) -> str:
    """Return a search tool's JSON result of about ``size`` bytes."""
    hits: list[dict[str, Any]] = []
    while len(json.dumps(hits)) < size:
        slug = "-".join(rng.choice(_WORDS) for _ in range(4))
        hits.append(
            {
                "id": f"doc_{rng.getrandbits(48):012x}",
                "title": _text(rng, rng.randint(5, 10)),
                "url": f"https://www.example-{rng.randint(1, 400)}.com/{rng.randint(2015, 2026)}/{slug}",
                "published": f"{rng.randint(2015, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
                "score": round(rng.random(), 4),
                "snippet": _text(rng, rng.randint(30, 70)),
                "tags": rng.sample(_WORDS, 3),
            }
        )
    return json.dumps({"query": _text(rng, 4), "total": len(hits) * 7, "hits": hits})


def turns(kind: str, count: int, seed: int = 7) -> list[tuple[str, list[Any]]]:
    """``count`` turns of a transcript: (prompt, the scripted model's replies for that turn)."""
    rng = random.Random(seed)
    script = []
    for index in range(count):
        if kind == "chat":
            script.append((_text(rng, rng.randint(8, 35)), [_text(rng, rng.randint(30, 130))]))
        else:
            size = int(2_000 * (25 ** rng.random()))  # 2-50 KB, log-uniform
            name = "search" if index % 2 == 0 else "orders"
            call = {"tool": name, "input": {"query": _text(rng, 5), "size": size, "seed": seed * 1000 + index}}
            script.append((_text(rng, rng.randint(10, 40)), [call, _text(rng, rng.randint(60, 200))]))
    return script


@tool
def search(query: str, size: int, seed: int) -> str:
    """Search the web (a deterministic stand-in: the same arguments give the same JSON)."""
    return tool_result(random.Random(seed), size)


@tool
def orders(query: str, size: int, seed: int) -> str:
    """List orders (a deterministic stand-in: the same arguments give the same JSON)."""
    return records_result(random.Random(seed), size)


def _agent(manager: Any, replies: list[Any]) -> Agent:
    return Agent(
        agent_id=AGENT_ID,
        model=ScriptedModel(replies),
        session_manager=manager,
        conversation_manager=NullConversationManager(),
        tools=[search, orders],
        callback_handler=None,
    )


def _memory(client: Any, manager: ValkeySessionManager, session_id: str) -> dict[str, float]:
    ids = [int(n) for n in client.zrange(manager.keys.messages(session_id, AGENT_ID), 0, -1)]
    keys = manager.keys.message_keys(session_id, AGENT_ID, ids)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.strlen(key)
    replies = pipe.execute()
    return {
        "memory_per_message": sum(replies[0::2]) / len(keys),
        "stored_bytes_per_message": sum(replies[1::2]) / len(keys),
    }


def run_transcript(client: Any, kind: str, turn_count: int, restore_messages: int, repeats: int) -> dict[str, Any]:
    """Every setting on one transcript: per-turn hook time (interleaved), memory, restore of ``restore_messages``."""
    script = turns(kind, turn_count)
    agents, timers, managers = {}, {}, {}
    for name, settings in SETTINGS.items():
        managers[name] = ValkeySessionManager(f"{kind}-{name}", client, ttl=None, **settings)
        timers[name] = HookTimer(managers[name])
        agents[name] = _agent(managers[name], [reply for _, replies in script for reply in replies])
    hooks: dict[str, list[float]] = {name: [] for name in SETTINGS}
    shuffle = random.Random(3).shuffle
    for prompt, _ in script:
        order = list(SETTINGS)
        shuffle(order)
        for name in order:
            timers[name].total = 0.0
            agents[name](prompt)
            hooks[name].append(timers[name].total)
    rows: dict[str, dict[str, Any]] = {}
    for name in SETTINGS:
        rows[name] = {"hooks_median_ms": statistics.median(hooks[name]) * 1e3}
        rows[name].update(_memory(client, managers[name], f"{kind}-{name}"))
    # Restore: a session of restore_messages messages, the transcript's messages repeated, per setting.
    source = agents["plain"].messages
    for name, settings in SETTINGS.items():
        session_id = f"{kind}-restore-{name}"
        manager = ValkeySessionManager(session_id, client, ttl=None, **settings)
        writer = _agent(manager, [])
        for index in range(restore_messages):
            writer.messages.append(source[index % len(source)])
            manager.append_message(source[index % len(source)], writer)
        manager.sync_agent(writer)

    def restore(name: str) -> Any:
        manager = ValkeySessionManager(f"{kind}-restore-{name}", client, ttl=None, **SETTINGS[name])
        restored = _agent(manager, [])
        assert len(restored.messages) == restore_messages
        return restored

    times = interleaved({name: (lambda name=name: restore(name)) for name in SETTINGS}, repeats)
    for name in SETTINGS:
        rows[name]["restore_median_ms"] = statistics.median(times[name]) * 1e3
    plain = rows["plain"]
    for row in rows.values():
        row["memory_ratio"] = row["memory_per_message"] / plain["memory_per_message"]
        row["hooks_ratio"] = row["hooks_median_ms"] / plain["hooks_median_ms"]
        row["restore_ratio"] = row["restore_median_ms"] / plain["restore_median_ms"]
    return {"turns": turn_count, "messages": len(source), "restore_messages": restore_messages, "settings": rows}


TARGETS = (
    ("tool-heavy", "zstd", "memory_ratio", 0.4),
    ("tool-heavy", "encrypted", "hooks_ratio", 1.2),
    ("tool-heavy", "encrypted", "restore_ratio", 1.3),
    ("chat", "encrypted", "hooks_ratio", 1.2),
    ("chat", "encrypted", "restore_ratio", 1.3),
)


def table(results: dict[str, Any]) -> str:
    """Return the Markdown table of a run, with the targets checked."""
    lines = [
        "| transcript | setting | memory / message (B) | stored / message (B) | memory × plain | hooks / turn (ms) "
        f"| hooks × plain | restore {results['chat']['restore_messages']} (ms) | restore × plain |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("tool-heavy", "chat"):
        for name, row in results[kind]["settings"].items():
            lines.append(
                f"| {kind} | {name} | {row['memory_per_message']:,.0f} | {row['stored_bytes_per_message']:,.0f} "
                f"| {row['memory_ratio']:.2f} | {row['hooks_median_ms']:.2f} | {row['hooks_ratio']:.2f} "
                f"| {row['restore_median_ms']:.0f} | {row['restore_ratio']:.2f} |"
            )
    lines.append("")
    for kind, name, measure, most in TARGETS:
        value = results[kind]["settings"][name][measure]
        lines.append(
            f"- {kind}, {name}, {measure} {value:.2f} (target <= {most}): {'met' if value <= most else 'MISSED'}"
        )
    lines.append("")
    lines.append(machine_line(results["machine"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both transcripts on a fresh server; print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenario_values", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer turns and rounds (seconds)")
    mode.add_argument("--smoke", action="store_true", help="a few turns, 50-message restores: proves it runs")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where to write benchmarks-values.json")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    tool_turns, chat_turns, restored, repeats = (
        (2, 3, 50, 1) if args.smoke else (6, 10, 1000, 3) if args.quick else (40, 80, 1000, 7)
    )
    started = time.monotonic()
    with LocalValkey(args=["--maxmemory-policy", "noeviction"]) as server:
        client = server.client(decode_responses=False)
        results: dict[str, Any] = {"machine": machine(server.client())}
        results["tool-heavy"] = run_transcript(client, "tool-heavy", tool_turns, restored, repeats)
        results["chat"] = run_transcript(client, "chat", chat_turns, restored, repeats)
    results["seconds"] = round(time.monotonic() - started, 1)
    print(table(results))
    os.makedirs(args.out, exist_ok=True)
    (args.out / "benchmarks-values.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
