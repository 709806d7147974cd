"""Client kinds side by side: ``python -m benchmarks.clients [--server BINARY] [--turns N] [--sessions N]``.

Every kind of client the library takes, through one factory (:data:`KINDS`: a name, whether it is an asyncio
client, and how to build one for a port), measured in one run, interleaved, beside the floors:

- **per turn**: the time spent in the session manager's hook callbacks per agent turn (two messages a turn,
  ``NullConversationManager``), over ``--sessions`` fresh conversations of ``--turns`` turns each (up to
  200 messages), every case's turn in a fresh random order; beside the same-writes floor (the SDK's
  ``RepositorySessionManager`` over one bare command a call, stores.py's ``bare``) and the raw floor
  (one ``SET`` a message, ``floor``), both on valkey-py with its pure-Python parser and with libvalkey;
- **restore**: ``list_messages`` of N = 10 / 100 / 1000 / 10000 messages (an asyncio client: awaited on its
  loop, as ``open()`` reads each agent's), beside the raw floor: one ``MGET`` of the keys + ``json.loads``
  of each value, on valkey-py with its pure-Python parser (what ``pip install valkey`` gives) and libvalkey;
- **saturation** (``--saturation SECONDS``, 0 to skip): P processes x T threads of agents, each with its own
  session, turning for that long (scenario_concurrency.measure), turns/s per synchronous kind, beside the
  same-writes floor on it; ``--rounds`` rounds, the order rotating.

Ratios are to the floors on valkey-py with its pure-Python parser (the reference), measured in the same run.
Prints Markdown tables (docs/benchmarks.md); the machine is shared: quote medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strands import Agent
from strands.agent.conversation_manager import NullConversationManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

from .kinds import FLOORS, KINDS, PURE, available
from .messages import session_messages
from .scenario_concurrency import measure
from .seed import AGENT_ID, decode_all, seed_floor, seed_library
from .stores import TTL, make_manager
from .timing import interleaved, machine, machine_line


class HookTime:
    """Adds up the time spent in a session manager's hook callbacks (awaited ones until they are done)."""

    def __init__(self) -> None:
        """Start at 0."""
        self.total = 0.0

    def attach(self, manager: Any) -> None:
        """Time every callback ``manager`` registers from now on."""
        register = manager.register_hooks
        manager.register_hooks = lambda registry, **kwargs: register(_TimedRegistry(registry, self), **kwargs)


class _TimedRegistry:
    def __init__(self, registry: Any, timer: HookTime) -> None:
        self.registry, self.timer = registry, timer

    def add_callback(self, event_type: Any, callback: Callable[[Any], Any]) -> None:
        timer = self.timer
        if inspect.iscoroutinefunction(callback):

            async def timed_async(event: Any) -> None:
                start = time.perf_counter()
                try:
                    await callback(event)
                finally:
                    timer.total += time.perf_counter() - start

            self.registry.add_callback(event_type, timed_async)
            return

        def timed(event: Any) -> None:
            start = time.perf_counter()
            try:
                callback(event)
            finally:
                timer.total += time.perf_counter() - start

        self.registry.add_callback(event_type, timed)


@dataclass
class _Conversation:
    agent: Agent
    timer: HookTime
    loop: asyncio.AbstractEventLoop | None  # an asyncio client's

    def turn(self, prompt: str) -> float:
        self.timer.total = 0.0
        if self.loop is not None:
            self.loop.run_until_complete(self.agent.invoke_async(prompt))
        else:
            self.agent(prompt)
        return self.timer.total


def _conversation(case: str, clients: dict[str, Any], session_id: str, loop: Any) -> _Conversation:
    """Start a fresh conversation of ``case`` (``library/<kind>``, ``bare/<kind>`` or ``floor/<kind>``), warmed up."""
    store, kind = case.split("/", 1)
    client, timer = clients[kind], HookTime()
    if KINDS[kind].asyncio:
        manager: Any = loop.run_until_complete(ValkeySessionManager.open(session_id, client, ttl=TTL))
    else:
        manager = make_manager(store, session_id, client, None)
        loop = None
    timer.attach(manager)
    agent = Agent(
        agent_id=AGENT_ID,
        model=ScriptedModel(),
        session_manager=manager,
        conversation_manager=NullConversationManager(),
        callback_handler=None,
    )
    conversation = _Conversation(agent, timer, loop)
    conversation.turn("warm-up turn (creates the agent record)")
    return conversation


def per_turn(clients: dict[str, Any], sessions: int, turns: int, loop: Any) -> dict[str, list[float]]:
    """Seconds in hooks per turn, per case, every case's turns interleaved in a fresh random order."""
    floors = [kind for kind in FLOORS if kind in clients]
    cases = [f"library/{kind}" for kind in clients] + [
        f"{store}/{kind}" for store in ("bare", "floor") for kind in floors
    ]
    samples: dict[str, list[float]] = {case: [] for case in cases}
    shuffle = random.Random(7).shuffle
    for session in range(sessions):
        conversations = {
            case: _conversation(case, clients, f"kinds-{session}-{n}", loop) for n, case in enumerate(cases)
        }
        for turn in range(turns):
            order = list(cases)
            shuffle(order)
            for case in order:
                samples[case].append(conversations[case].turn(f"prompt {turn}"))
    return samples


def restore(clients: dict[str, Any], sizes: list[int], repeats: int, loop: Any) -> dict[int, dict[str, list[float]]]:
    """Seconds per restore of N messages, per case (``library/<kind>``, ``floor/<kind>``), interleaved."""
    seeder = clients[PURE]
    results = {}
    for n in sizes:
        records = session_messages(n)
        sid = f"kinds-restore-{n}"
        seed_library(seeder, sid, records)
        floor_keys = seed_floor(seeder, sid, records)
        cases: dict[str, Callable[[], Any]] = {}
        for name, client in clients.items():
            if KINDS[name].asyncio:
                manager = loop.run_until_complete(ValkeySessionManager.open(sid, client, ttl=TTL, agent_ids=[]))
                read = functools.partial(_awaited, loop, manager, sid)
            else:
                manager = ValkeySessionManager(session_id=sid, client=client, ttl=TTL)
                read = functools.partial(manager.list_messages, sid, AGENT_ID)
            cases[f"library/{name}"] = read
        for name in FLOORS:
            if name in clients:
                cases[f"floor/{name}"] = functools.partial(_floor_restore, clients[name], floor_keys)
        results[n] = interleaved(cases, repeats if n < 10_000 else max(3, repeats // 3))
    return results


def _awaited(loop: asyncio.AbstractEventLoop, manager: ValkeySessionManager, session_id: str) -> Any:
    """Restore the messages with an asyncio client, awaited on its loop (what ``open()`` does for each agent)."""
    loop.run_until_complete(manager._prefetch(AGENT_ID))
    return manager.list_messages(session_id, AGENT_ID)  # the prefetched list: sends nothing


def _floor_restore(client: Any, keys: list[str]) -> Any:
    """Restore as the raw floor does: one ``MGET`` of the keys it knows, ``json.loads`` of each value."""
    return decode_all(client.mget(keys))


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def turn_table(samples: dict[str, list[float]]) -> list[str]:
    """Markdown: median ms in hooks per turn, and the ratio to each floor on the pure-Python client."""
    bare, floor = _ms(samples[f"bare/{PURE}"]), _ms(samples[f"floor/{PURE}"])
    lines = [
        "| client kind / store | in hooks per turn (ms) | x same-writes floor | x raw floor |",
        "|---|---|---|---|",
    ]
    for case, values in samples.items():
        store, kind = case.split("/", 1)
        label = {"library": "this library", "bare": "same-writes floor", "floor": "raw floor"}[store]
        lines.append(
            f"| {label}, {kind} | {_ms(values):.3f} | {_ms(values) / bare:.2f}x | {_ms(values) / floor:.2f}x |"
        )
    return lines


def restore_table(results: dict[int, dict[str, list[float]]]) -> list[str]:
    """Markdown: median ms per restore of N messages, and the ratio to the raw floor on the pure-Python client."""
    sizes = list(results)
    lines = [
        "| client kind / store | " + " | ".join(f"N={n:,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for case in results[sizes[0]]:
        store, kind = case.split("/", 1)
        label = "this library" if store == "library" else "raw floor (MGET + json.loads)"
        cells = []
        for n in sizes:
            ms, floor = _ms(results[n][case]), _ms(results[n][f"floor/{PURE}"])
            cells.append(f"{ms:.3g} ({ms / floor:.2f}x)")
        lines.append(f"| {label}, {kind} | " + " | ".join(cells) + " |")
    return lines


def saturation_table(port: int, kinds: list[str], clients: tuple[int, int], seconds: float, rounds: int) -> list[str]:
    """Markdown: turns/s of P x T agents of each synchronous kind, and of the same-writes floor on valkey-py's.

    One case at a time, ``rounds`` times, the order rotating each round; the median round, and its ratio to the
    same-writes floor on valkey-py in pure Python of the same round.
    """
    cases = [(store, kind) for kind in kinds for store in ("library", "bare") if store == "library" or kind in FLOORS]
    rates: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    ratios: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as files:
        for round_ in range(rounds):
            measured = {}
            for store, kind in cases[round_ % len(cases) :] + cases[: round_ % len(cases)]:
                tag = f"sat-{round_}-{store}-{kinds.index(kind)}"
                one = measure(port, Path(files), store, clients, tag, seconds, kind=kind)
                measured[store, kind] = one["turns"] / one["wall_s"]
            for case, rate in measured.items():
                rates[case].append(rate)
                ratios[case].append(rate / measured["bare", PURE])
    lines = ["| client kind / store | turns/s | x same-writes floor |", "|---|---|---|"]
    for store, kind in cases:
        label = "this library" if store == "library" else "same-writes floor"
        rate, ratio = statistics.median(rates[store, kind]), statistics.median(ratios[store, kind])
        lines.append(f"| {label}, {kind} | {rate:.0f} | {ratio:.2f}x |")
    return lines


def _main(args: argparse.Namespace, port: int, loop: asyncio.AbstractEventLoop) -> list[str]:
    kinds = available()
    clients = {name: _made(kind.make(port), loop) for name, kind in kinds.items()}
    out = [f"_{machine_line(machine(clients[PURE]))}_", "", f"Kinds: {', '.join(clients)}.", ""]
    samples = per_turn(clients, args.sessions, args.turns, loop)
    out += ["Per turn (in hooks, median):", "", *turn_table(samples), ""]
    restored = restore(clients, args.sizes, args.repeats, loop)
    out += ["Restore of N messages, ms (ratio to the raw floor on valkey-py, pure Python):", ""]
    out += [*restore_table(restored), ""]
    if args.saturation:
        synchronous = [name for name, kind in kinds.items() if not kind.asyncio]
        agents = (args.processes, args.threads)
        out += [f"Saturation, {agents[0]} processes x {agents[1]} threads, {args.saturation} s each, median of"]
        out += [f"{args.rounds} rounds:", ""]
        out += [*saturation_table(port, synchronous, agents, args.saturation, args.rounds), ""]
    for client in clients.values():
        _made(client.aclose() if hasattr(client, "aclose") else client.close(), loop)
    return out


def _made(result: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """Return ``result``, awaited on ``loop`` if it is awaitable (an asyncio client's creation or closing)."""
    return loop.run_until_complete(result) if inspect.isawaitable(result) else result


def main(argv: list[str] | None = None) -> None:
    """Run every measure and print the tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.clients", description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=None, help="valkey-server binary (default: from PATH)")
    parser.add_argument("--sessions", type=int, default=3, help="fresh conversations per case (default 3)")
    parser.add_argument("--turns", type=int, default=50, help="turns per conversation (default 50: 100 messages)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10_000], help="restore sizes")
    parser.add_argument("--repeats", type=int, default=15, help="timed restores per case (a third for 10,000)")
    parser.add_argument("--saturation", type=float, default=3.0, help="seconds per saturation run (0: skip)")
    parser.add_argument("--processes", type=int, default=2, help="saturation: client processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="saturation: agents per process (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="saturation: rounds of every case (default 3)")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()  # the asyncio clients': run only while one of their calls is timed
    try:
        with LocalValkey(binary=args.server, args=["--maxmemory-policy", "noeviction"]) as server:
            print("\n".join(_main(args, server.port, loop)))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
