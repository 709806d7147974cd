"""Many sessions at once: P processes x T threads, each thread an agent with its own session.

Agents use the SDK's default conversation manager (a sliding window), as most users do. All
threads of all processes start together (a barrier), each runs ``concurrency_turns`` turns; the
result is the median over rounds of turns/s, and the latency percentiles of all single turns.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import valkey
from strands import Agent

from strands_valkey_session_manager.testing.model import ScriptedModel

from .kinds import KINDS
from .seed import AGENT_ID, Context
from .stores import make_manager
from .timing import percentile

STORES = ("none", "library", "naive", "file", "floor")


def _process(
    store: str, port: int, file_dir: str, tag: str, threads: int, length: float, go: Any, out: Any, kind: str | None
) -> None:
    """One process: ``threads`` agents, warmed up, then released together with every other process.

    Each agent runs ``length`` turns if it is an int, else turns until ``length`` seconds have passed. ``kind``:
    a synchronous client kind of kinds.py (``None``: valkey-py as it is installed).
    """
    if kind is None:
        client = valkey.Valkey(host="127.0.0.1", port=port, decode_responses=True, max_connections=threads + 2)
    else:
        client = KINDS[kind].make(port)
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
    counted = isinstance(length, int)

    def work(agent: Agent) -> None:
        mine: list[float] = []
        deadline = time.perf_counter() + length
        while (len(mine) < length) if counted else (time.perf_counter() < deadline):
            start = time.perf_counter()
            agent(f"prompt {len(mine)}")
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(agent,)) for agent in agents]
    out.put("ready")
    go.wait()
    start, cpu_start = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start, "latencies": latencies})


def measure(
    port: int,
    file_dir: Path,
    store: str,
    clients: tuple[int, int],
    tag: str,
    length: float,
    probe: Callable[[], Any] = lambda: None,
    kind: str | None = None,
) -> dict[str, Any]:
    """Run ``clients`` = (processes, threads each) agents of ``store`` once against the server on ``port``.

    ``length``: turns per agent (int) or seconds (float). ``probe()`` is called as the agents are released
    and again when the last one is done (``probes``); ``kind``: the client kind (``_process``). Returns the turns,
    the wall time (of the slowest process), the processes' CPU seconds and every turn's latency.
    """
    processes, threads = clients
    spawn = multiprocessing.get_context("spawn")
    go, out = spawn.Event(), spawn.Queue()
    children = [
        spawn.Process(
            target=_process, args=(store, port, str(file_dir), f"{tag}-{index}", threads, length, go, out, kind)
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    try:
        _receive(out, children, 300)  # every process warmed up
        go.set()
        probes = [probe()]
        reports = _receive(out, children, 600)
        probes.append(probe())
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    latencies = [latency for report in reports for latency in report["latencies"]]
    return {
        "turns": len(latencies),
        "wall_s": max(report["wall_s"] for report in reports),
        "cpu_s": sum(report["cpu_s"] for report in reports),
        "latencies": latencies,
        "probes": probes,
    }


def _receive(out: Any, children: list[Any], timeout: float) -> list[Any]:
    """One message from each child process; ``RuntimeError`` as soon as one died without sending it."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < len(children):
        try:
            received.append(out.get(timeout=0.5))
        except queue.Empty:
            codes = [child.exitcode for child in children]
            if any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
                raise RuntimeError(f"benchmark client processes failed or hung (exit codes {codes})") from None
    return received


def run(context: Context) -> list[dict[str, Any]]:
    """Every (P, T) of the config, ``concurrency_rounds`` times, the stores' order rotating every round."""
    results = []
    for processes, threads in context.config.concurrency:
        runs: dict[str, list[dict[str, Any]]] = {store: [] for store in STORES}
        for round_ in range(context.config.concurrency_rounds):
            order = STORES[round_ % len(STORES) :] + STORES[: round_ % len(STORES)]
            for store in order:
                tag = f"{processes}x{threads}-{store}-{round_}"
                file_dir = context.file_dir / "concurrency"
                turns = context.config.concurrency_turns
                runs[store].append(measure(context.server.port, file_dir, store, (processes, threads), tag, turns))
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
