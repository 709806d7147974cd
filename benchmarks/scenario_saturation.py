"""Saturation: how many agent turns a second one server with ``--io-threads`` takes, and which side gives out.

A server of its own, started with ``--io-threads N`` (N = ``saturation_io_threads``, at most the cores),
and P client processes x T threads, each thread an agent with its own session (the SDK's default sliding
window), all released together and turning for ``saturation_seconds``. Implementations run one at a time,
their order rotating between client configurations and rounds. Measured over the run:

- turns/s of all clients together;
- the server's CPU (``INFO cpu``): the main thread (which executes every command; with I/O threads it does
  little else) and every thread, as a share of one core, and per turn;
- the client processes' CPU (``time.process_time()`` of each), as a share of one core.

The side that saturates: the server when its main thread is busy ~all the time; the machine when the server
and the clients together use ~all its cores. On a machine with few cores the clients (Python agents, far
more CPU per turn than the server) take most of it, so turns/s there is what the machine does, not the
server's ceiling; the server's CPU per turn and its main thread's share say how far that ceiling is.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from strands_valkey_session_manager.testing.server import LocalValkey

from .scenario_concurrency import measure
from .seed import Context
from .serverstats import cpu
from .timing import percentile

IMPLS = ("none", "library", "bare", "file")
#: Shares of the limit above which a side counts as saturated.
BUSY = 0.9


def run(context: Context) -> dict[str, Any]:
    """Every client configuration x round x implementation, against a fresh ``--io-threads`` server."""
    config = context.config
    cores = os.cpu_count() or 1
    io_threads = max(1, min(config.saturation_io_threads, cores))
    args = ["--io-threads", str(io_threads), "--maxmemory-policy", "noeviction"]
    rows = []
    with LocalValkey(binary=context.server.binary, args=args) as server:
        stats = server.client()
        runs = 0
        for clients in config.saturation_clients:
            measured: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
            for round_ in range(config.saturation_rounds):
                order = IMPLS[runs % len(IMPLS) :] + IMPLS[: runs % len(IMPLS)]
                runs += 1
                for impl in order:
                    stats.execute_command("FLUSHALL", "SYNC")
                    tag = f"sat-{clients[0]}x{clients[1]}-{impl}-{round_}"
                    file_dir = context.file_dir / "saturation"
                    one = measure(server.port, file_dir, impl, clients, tag, config.saturation_seconds, probe(stats))
                    measured[impl].append(_shares(one))
            rows += [_row(impl, clients, runs_of_impl, cores) for impl, runs_of_impl in measured.items()]
            context.log(f"saturation: {clients[0]} processes x {clients[1]} threads done")
        stats.close()
    return {"io_threads": io_threads, "cores": cores, "rows": rows}


def probe(stats: Any) -> Any:
    """Read the server's CPU (all threads, main thread) and the reads its I/O threads did, so far."""

    def read() -> tuple[float, float, int]:
        total, main = cpu(stats)
        return total, main, int(stats.info("stats").get("io_threaded_reads_processed", 0))

    return read


def _shares(one: dict[str, Any]) -> dict[str, Any]:
    """Turns/s and CPU shares (of one core) of one run."""
    (total_before, main_before, reads_before), (total_after, main_after, reads_after) = one["probes"]
    wall, turns = one["wall_s"], max(1, one["turns"])
    return {
        "turns": one["turns"],
        "turns_per_s": one["turns"] / wall,
        "server_cpu": (total_after - total_before) / wall,
        "server_main_cpu": (main_after - main_before) / wall,
        "server_cpu_per_turn_us": (total_after - total_before) * 1e6 / turns,
        "io_threaded_reads_per_turn": (reads_after - reads_before) / turns,
        "clients_cpu": one["cpu_s"] / wall,
        "p99_ms": percentile(one["latencies"], 99) * 1e3 if one["latencies"] else 0.0,
    }


def _row(impl: str, clients: tuple[int, int], runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Median of the runs of one implementation at one client configuration, and which side saturated."""
    row: dict[str, Any] = {"store": impl, "processes": clients[0], "threads": clients[1], "rounds": len(runs)}
    for name in runs[0]:
        row[name] = statistics.median(run[name] for run in runs)
    row["saturated"] = saturated(row, cores)
    return row


def saturated(row: dict[str, Any], cores: int) -> str:
    """Name the side that limits a run: the server's main thread, the machine's cores, the clients, or neither."""
    if row["server_main_cpu"] >= BUSY:
        return "server (main thread)"
    if row["server_cpu"] + row["clients_cpu"] >= BUSY * cores:
        return "machine: clients' CPU" if row["clients_cpu"] > row["server_cpu"] else "machine: server's CPU"
    if row["clients_cpu"] >= BUSY * row["processes"]:
        return "clients (a core per process)"
    return "neither (latency-bound)"
