"""Many sessions at once: P processes x T threads, each thread an agent with its own session.

Agents use the SDK's default conversation manager (a sliding window), as most users do. All
threads of all processes start together (a barrier), each runs ``concurrency_turns`` turns; the
result is the median over rounds of turns/s, and the latency percentiles of all single turns.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import valkey
from strands import Agent

from strands_valkey_session_manager.testing.model import ScriptedModel

from .seed import AGENT_ID, Context
from .stores import make_manager
from .timing import percentile

STORES = ("none", "library", "naive", "file", "floor")


def _process(store: str, port: int, file_dir: str, tag: str, threads: int, turns: int, barrier: Any, out: Any) -> None:
    """One process: ``threads`` agents, warmed up, then released together with every other process."""
    client = valkey.Valkey(host="127.0.0.1", port=port, decode_responses=True, max_connections=threads + 2)
    agents = [
        Agent(
            agent_id=AGENT_ID,
            model=ScriptedModel(),
            session_manager=make_manager(store, f"conc-{tag}-{index}", client, Path(file_dir)),
            callback_handler=None,
        )
        for index in range(threads)
    ]
    for agent in agents:
        agent("warm-up")
    latencies: list[float] = []
    lock = threading.Lock()

    def work(agent: Agent) -> None:
        mine = []
        for turn in range(turns):
            start = time.perf_counter()
            agent(f"prompt {turn}")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(agent,)) for agent in agents]
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put({"wall_s": time.perf_counter() - start, "latencies": latencies})


def measure(context: Context, store: str, processes: int, threads: int, tag: str) -> dict[str, Any]:
    """Run one (store, P, T) configuration once; returns its wall time and every turn's latency."""
    spawn = multiprocessing.get_context("spawn")
    barrier, out = spawn.Barrier(processes), spawn.Queue()
    turns = context.config.concurrency_turns
    file_dir = str(context.file_dir / "concurrency")
    children = [
        spawn.Process(
            target=_process,
            args=(store, context.server.port, file_dir, f"{tag}-{index}", threads, turns, barrier, out),
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    reports = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join(timeout=60)
    latencies = [latency for report in reports for latency in report["latencies"]]
    return {"turns": len(latencies), "wall_s": max(report["wall_s"] for report in reports), "latencies": latencies}


def run(context: Context) -> list[dict[str, Any]]:
    """Every (P, T) of the config, ``concurrency_rounds`` times, the stores' order rotating every round."""
    results = []
    for processes, threads in context.config.concurrency:
        runs: dict[str, list[dict[str, Any]]] = {store: [] for store in STORES}
        for round_ in range(context.config.concurrency_rounds):
            order = STORES[round_ % len(STORES) :] + STORES[: round_ % len(STORES)]
            for store in order:
                tag = f"{processes}x{threads}-{store}-{round_}"
                runs[store].append(measure(context, store, processes, threads, tag))
        for store, measured in runs.items():
            latencies = [latency for one in measured for latency in one["latencies"]]
            results.append(
                {
                    "store": store,
                    "processes": processes,
                    "threads": threads,
                    "rounds": len(measured),
                    "turns": len(latencies),
                    "turns_per_s": statistics.median(one["turns"] / one["wall_s"] for one in measured),
                    "median_ms": statistics.median(latencies) * 1e3,
                    "p99_ms": percentile(latencies, 99) * 1e3,
                }
            )
        context.log(f"concurrency: {processes} processes x {threads} threads done")
    return results
