"""Timing: interleaved repeats (so machine drift hits every case alike), robust statistics, the machine."""

from __future__ import annotations

import gc
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import valkey


def interleaved(
    cases: dict[str, Callable[[], Any]],
    repeats: int,
    setup: Callable[[str], Any] | None = None,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Time each case ``repeats`` times, round by round, in a fresh shuffled order each round.

    ``setup(name)`` (untimed) runs before every timed call of that case, e.g. to re-create what
    a delete removed. The first ``warmup`` rounds are run and thrown away.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    shuffle = random.Random(1234).shuffle
    for round_ in range(warmup + repeats):
        order = list(cases)
        shuffle(order)
        for name in order:
            if setup is not None:
                setup(name)
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                samples[name].append(elapsed)
    return samples


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile (nearest rank); with few values p99 is the maximum."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict[str, float]:
    """Median, p99, mean and number of a list of seconds, in milliseconds."""
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": percentile(samples, 99) * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
        "repeats": len(samples),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(client: valkey.Valkey) -> dict[str, Any]:
    """Describe what the numbers were measured on: cores, CPU, Python, Valkey and library versions, load."""
    server = client.info("server")
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "server": f"{server.get('server_name', 'redis')} {server.get('valkey_version') or server['redis_version']}",
        "valkey_py": metadata.version("valkey"),
        "strands_agents": metadata.version("strands-agents"),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def machine_line(info: dict[str, Any]) -> str:
    """One line naming the machine, printed under every table."""
    return (
        f"Machine: {info['cores']} cores ({info['cpu']}), Python {info['python']}, {info['server']}, "
        f"valkey-py {info['valkey_py']}, strands-agents {info['strands_agents']}; "
        f"load average {info['load_average'][0]} at start; {info['date']}."
    )
