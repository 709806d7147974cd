"""Saturation: how many agent turns a second one server with ``--io-threads`` takes, and which side gives out.

Servers of their own, one per ``saturation_io_threads`` setting (the first, N, is the run; the others, e.g.
1, are the comparison; each capped at the cores), and P client processes x T threads, each thread an agent
with its own session (the SDK's default sliding window), all released together and turning for
``saturation_seconds``. One (server, implementation) runs at a time, the order rotating between client
configurations and rounds; implementations without a server (``none``, ``file``) run once, beside N.
Measured over each run:

- turns/s of all clients together;
- the server's CPU (``INFO cpu``): the main thread (which executes every command; with I/O threads it does
  less else) and every thread, as a share of one core, and per turn;
- the client processes' CPU (``time.process_time()`` of each), and every other process's (``/proc/stat``).

The side that saturates: the server when its main thread is busy ~all the time; else the machine when it is
busy ~all the time; else the clients when each process uses its core. On a machine with few cores the
clients (Python agents, far more CPU per turn than the server) take most of it, so turns/s there is what the
machine does, not the server's ceiling; the server's CPU per turn and its main thread's share say how far
that ceiling is.
"""

from __future__ import annotations

import os
import statistics
from contextlib import ExitStack
from typing import Any

from strands_valkey_session_manager.testing.server import LocalValkey

from .scenario_concurrency import measure
from .seed import Context
from .serverstats import cpu
from .timing import percentile

IMPLS = ("none", "library", "bare", "file")
#: The implementations that use the server (the only ones run against the comparison servers).
SERVED = ("library", "bare")
#: Shares of the limit above which a side counts as saturated.
BUSY = 0.9


def run(context: Context) -> dict[str, Any]:
    """Every client configuration x round x (server, implementation), one at a time."""
    config = context.config
    cores = os.cpu_count() or 1
    settings = list(dict.fromkeys(max(1, min(io, cores)) for io in config.saturation_io_threads))
    cases = [(io, impl) for io in settings for impl in IMPLS if io == settings[0] or impl in SERVED]
    rows = []
    with ExitStack() as stack:
        servers = {}
        for io in settings:
            args = ["--io-threads", str(io), "--maxmemory-policy", "noeviction"]
            server = stack.enter_context(LocalValkey(binary=context.server.binary, args=args))
            servers[io] = (server, stack.enter_context(server.client()))
        runs = 0
        for clients in config.saturation_clients:
            measured: dict[tuple[int, str], list[dict[str, Any]]] = {case: [] for case in cases}
            for _ in range(config.saturation_rounds):
                order = cases[runs % len(cases) :] + cases[: runs % len(cases)]
                runs += 1
                for io, impl in order:
                    server, stats = servers[io]
                    stats.execute_command("FLUSHALL", "SYNC")
                    tag = f"sat-{clients[0]}x{clients[1]}-{impl}-io{io}-{runs}"
                    file_dir = context.file_dir / "saturation"
                    one = measure(server.port, file_dir, impl, clients, tag, config.saturation_seconds, probe(stats))
                    measured[(io, impl)].append(_shares(one))
            rows += [_row(impl, io, clients, runs_of, cores) for (io, impl), runs_of in measured.items()]
            context.log(f"saturation: {clients[0]} processes x {clients[1]} threads done")
    return {"io_threads": settings[0], "io_threads_compared": settings[1:], "cores": cores, "rows": rows}


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy so far, every process (``/proc/stat``; 0 elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def probe(stats: Any) -> Any:
    """Read the server's CPU (all threads, main thread), the reads its I/O threads did and the machine's CPU."""

    def read() -> tuple[float, float, int, float]:
        total, main = cpu(stats)
        return total, main, int(stats.info("stats").get("io_threaded_reads_processed", 0)), machine_busy_s()

    return read


def _shares(one: dict[str, Any]) -> dict[str, Any]:
    """Turns/s and CPU shares (of one core) of one run."""
    (total_before, main_before, reads_before, busy_before), after = one["probes"]
    total_after, main_after, reads_after, busy_after = after
    wall, turns = one["wall_s"], max(1, one["turns"])
    server, clients = (total_after - total_before) / wall, one["cpu_s"] / wall
    return {
        "turns": one["turns"],
        "turns_per_s": one["turns"] / wall,
        "server_cpu": server,
        "server_main_cpu": (main_after - main_before) / wall,
        "server_cpu_per_turn_us": (total_after - total_before) * 1e6 / turns,
        "server_main_cpu_per_turn_us": (main_after - main_before) * 1e6 / turns,
        "io_threaded_reads_per_turn": (reads_after - reads_before) / turns,
        "clients_cpu": clients,
        "others_cpu": max(0.0, (busy_after - busy_before) / wall - server - clients),
        "p99_ms": percentile(one["latencies"], 99) * 1e3 if one["latencies"] else 0.0,
    }


def _row(impl: str, io: int, clients: tuple[int, int], runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Median of the runs of one implementation on one server at one client configuration; which side saturated."""
    row: dict[str, Any] = {"store": impl, "io_threads": io, "processes": clients[0], "threads": clients[1]}
    row["rounds"] = len(runs)
    for name in runs[0]:
        row[name] = statistics.median(run[name] for run in runs)
    row["saturated"] = saturated(row, cores)
    return row


def saturated(row: dict[str, Any], cores: int) -> str:
    """Name the side that limits a run: the server's main thread, the machine's cores, the clients, or neither."""
    if row["server_main_cpu"] >= BUSY:
        return "server (main thread)"
    if row["server_cpu"] + row["clients_cpu"] + row["others_cpu"] >= BUSY * cores:
        users = {"clients": row["clients_cpu"], "server": row["server_cpu"], "other processes": row["others_cpu"]}
        return f"machine: most to {max(users, key=users.__getitem__)}"
    if row["clients_cpu"] >= BUSY * row["processes"]:
        return "clients (a core per process)"
    return "neither (latency-bound)"
