"""What a piece of work costs the server: CPU (``INFO cpu``, net of idle) and command execution (commandstats).

``measure(work)`` runs ``work`` between two ``INFO cpu`` readings, after ``CONFIG RESETSTAT``, then sleeps
as long again and reads the idle server the same way, and returns both. The harness's own ``INFO`` and
``CONFIG`` calls are in both windows and are left out of the command tables.

**Top-level commands.** ``INFO commandstats`` counts the commands a script runs (``redis.call``) under
their own names too, and a script's ``usec`` already includes theirs: summing every line counts that time
twice. So the client's connections count what they send (:class:`CountingConnection`; commands queued
between ``MULTI`` and ``EXEC`` count as run by ``EXEC``, which times them). A command's calls beyond what
was sent ran inside a script (or a transaction). The top-level execution time of a command is its ``usec``
times the share of its calls that were sent: exact when a command is only sent or only run by scripts,
prorated (same cost per call either way) when a measurement has both, e.g. a restore's ``GET`` of the
session beside the ``GET`` inside the agent-reading script.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import valkey

#: The harness's own commands, in every window: not part of what is measured.
HARNESS = frozenset({"info", "config"})


def _name(word: Any) -> str:
    """Return the base command name of a first argument (``"SCRIPT LOAD"`` -> ``script``), as commandstats names it."""
    text = word.decode() if isinstance(word, bytes) else str(word)
    return text.split(" ", 1)[0].lower()


class CommandCounter:
    """Counts the commands a client's connections send, by name: ``sent`` (top level) and ``queued`` (MULTI)."""

    def __init__(self) -> None:
        """Start at zero."""
        self.sent: Counter[str] = Counter()
        self.queued: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget what was counted so far."""
        with self._lock:
            self.sent.clear()
            self.queued.clear()

    def count(self, commands: Iterable[tuple[Any, ...]], in_multi: bool) -> bool:
        """Count one batch of commands sent on one connection; returns whether it ends inside a MULTI."""
        with self._lock:
            for command in commands:
                name = _name(command[0])
                if name in ("exec", "discard"):
                    in_multi = False
                (self.queued if in_multi else self.sent)[name] += 1
                if name == "multi":
                    in_multi = True
        return in_multi

    def client(self, port: int, **options: Any) -> valkey.Valkey:
        """Return a client of 127.0.0.1:``port`` whose connections count into this counter."""
        counter = self

        class Counting(CountingConnection):
            commands = counter

        pool = valkey.ConnectionPool(host="127.0.0.1", port=port, connection_class=Counting, **options)
        return valkey.Valkey(connection_pool=pool)


class CountingConnection(valkey.Connection):
    """A real connection that counts every command it sends (one by one, or a pipeline's batch)."""

    commands: CommandCounter
    _in_multi = False

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        """Count, then send as usual."""
        self._in_multi = self.commands.count([args], self._in_multi)
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        """Count each command of a pipeline, then pack as usual."""
        commands = list(commands)
        self._in_multi = self.commands.count(commands, self._in_multi)
        return super().pack_commands(commands)


@dataclass
class Window:
    """One measured stretch of time on the server."""

    wall_s: float
    cpu_s: float  # used_cpu_sys + used_cpu_user: every thread of the server
    main_cpu_s: float  # the same for the main thread only
    #: name -> (calls, usec), from commandstats (harness commands left out), base names (``script|load`` -> script)
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)


def cpu(client: valkey.Valkey) -> tuple[float, float]:
    """Read the server's CPU seconds so far: (all threads, main thread)."""
    info = client.info("cpu")
    total = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    main = float(info.get("used_cpu_sys_main_thread", 0.0)) + float(info.get("used_cpu_user_main_thread", 0.0))
    return total, main


def commandstats(client: valkey.Valkey) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as base name -> (calls, usec), the harness's own commands left out."""
    stats: dict[str, tuple[int, int]] = {}
    for key, value in client.info("commandstats").items():
        name = key.removeprefix("cmdstat_").split("|", 1)[0]
        if name not in HARNESS:
            calls, usec = stats.get(name, (0, 0))
            stats[name] = (calls + int(value["calls"]), usec + int(value["usec"]))
    return stats


def window(client: valkey.Valkey, work: Callable[[], Any]) -> Window:
    """Run ``work`` between two CPU readings taken after ``CONFIG RESETSTAT``."""
    client.config_resetstat()
    cpu_before, main_before = cpu(client)
    start = time.perf_counter()
    work()
    wall = time.perf_counter() - start
    cpu_after, main_after = cpu(client)
    return Window(wall, cpu_after - cpu_before, main_after - main_before, commandstats(client))


@dataclass
class Cost:
    """The server's cost of ``ops`` operations: a measured window, the idle one after it, what was sent."""

    ops: int
    busy: Window
    idle: Window
    sent: dict[str, int]

    def top_level(self) -> dict[str, tuple[float, float]]:
        """Name -> (calls, usec) of the top-level calls only (see the module docstring)."""
        result = {}
        for name, (calls, usec) in self.busy.commands.items():
            sent = self.sent.get(name, 0)
            if sent and calls:
                share = min(1.0, sent / calls)
                result[name] = (calls * share, usec * share)
        return result

    def summary(self) -> dict[str, Any]:
        """Per operation: server CPU net of idle (all threads, main thread), top-level execution (us), calls.

        ``calls``: top-level commands; ``calls_all``: every command the server ran (nested ones too).
        """
        top = self.top_level()
        per = 1e6 / self.ops
        return {
            "ops": self.ops,
            "wall_us": self.busy.wall_s * per,
            "cpu_us": (self.busy.cpu_s - self.idle.cpu_s) * per,
            "main_cpu_us": (self.busy.main_cpu_s - self.idle.main_cpu_s) * per,
            "idle_cpu_us": self.idle.cpu_s * per,
            "exec_us": sum(usec for _, usec in top.values()) / self.ops,
            "calls": sum(calls for calls, _ in top.values()) / self.ops,
            "calls_all": sum(calls for calls, _ in self.busy.commands.values()) / self.ops,
            "top_level": {name: round(calls / self.ops, 3) for name, (calls, _) in sorted(top.items())},
            "nested": {
                name: round((calls - top.get(name, (0, 0))[0]) / self.ops, 3)
                for name, (calls, _) in sorted(self.busy.commands.items())
                if calls - top.get(name, (0, 0))[0] > 0
            },
        }


def measure(stats: valkey.Valkey, counter: CommandCounter, ops: int, work: Callable[[], Any]) -> Cost:
    """Measure ``work`` (``ops`` operations) on the server ``stats`` talks to, then the idle server as long."""
    counter.reset()
    busy = window(stats, work)
    sent = dict(counter.sent)
    idle = window(stats, lambda: time.sleep(busy.wall_s))
    return Cost(ops, busy, idle, sent)
