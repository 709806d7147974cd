"""Server cost per turn and per operation: this library against the same-writes floor (and the client side of files).

For each operation, each implementation runs alone against the harness's server while it is measured
(:mod:`benchmarks.serverstats`): total server CPU net of an idle window as long, and the execution time of
the top-level commands (commandstats). Implementations alternate within each round and the order flips
every round (A B, B A, ...), so drift hits both; the first round warms up (scripts loaded, connections
open) and is thrown away; each figure is the median over the rounds, and each
ratio to the floor the median of the rounds' ratios (both measured in the same round).

- ``turn``: ``server_turns`` real ``Agent`` turns on the scripted model with the SDK's default conversation
  manager (a sliding window of 40), from an empty session: 2 messages a turn, and the agent record each time
  the window moves, as a user's agent writes.
- ``append``: ``append_message`` alone; ``sync``: ``sync_agent`` after a state change (one agent write).
- ``restore``: a new session manager and ``Agent(...)`` of a session of ``server_messages`` messages.
- ``delete``: ``delete_session`` of sessions of ``server_messages`` messages, from a manager opened (untimed)
  on the stored session, as on logout.

Implementations: ``library`` (``ValkeySessionManager``), ``bare`` (the SDK's ``RepositorySessionManager``
over :class:`~benchmarks.stores.BareRepository`: one bare command per repository call), ``bare-script``
(the same with each write one script call that only SETs, for the writing operations: the cost of a script
call itself) and ``file`` (``FileSessionManager``: client time only, no server).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from strands import Agent
from strands.session.file_session_manager import FileSessionManager
from strands.session.repository_session_manager import RepositorySessionManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel

from .messages import message, session_messages
from .scenario_restore import agent_from
from .seed import AGENT_ID, Context, empty, seed_bare, seed_file, seed_library
from .serverstats import CommandCounter, measure
from .stores import TTL, BareRepository, make_manager

IMPLS = ("library", "bare", "bare-script", "file")
OPS = ("turn", "append", "sync", "restore", "delete")
#: The operations that write (the only ones where ``bare-script`` differs from ``bare``).
WRITES = ("turn", "append", "sync")
#: Figures taken as the median over rounds (the rest, counts, come from the last round).
MEDIANS = ("wall_us", "cpu_us", "main_cpu_us", "idle_cpu_us", "exec_us")
#: Figures compared with the same-writes floor's of the same round (median of the rounds' ratios).
RATIOS = ("wall_us", "cpu_us", "main_cpu_us", "exec_us")

Work = tuple[int, Callable[[], Any]]


class Workloads:
    """Builds each (operation, implementation): prepares it untimed, returns (operations, the work to time)."""

    def __init__(self, context: Context, client: Any) -> None:
        """Use ``client`` (a counting client) for every Valkey implementation."""
        self.context, self.client, self.config = context, client, context.config

    def _agent(self, impl: str, sid: str) -> tuple[Any, Agent]:
        manager = make_manager(impl, sid, self.client, self.context.file_dir / "server")
        return manager, Agent(agent_id=AGENT_ID, model=ScriptedModel(), session_manager=manager, callback_handler=None)

    def turn(self, impl: str, sid: str) -> Work:
        """Agent turns from an empty session (the agent and session records are written before)."""
        _, agent = self._agent(impl, sid)
        return self.config.server_turns, lambda: [agent(f"prompt {index}") for index in range(self.config.server_turns)]

    def append(self, impl: str, sid: str) -> Work:
        """``append_message`` of synthetic messages (text, tool calls, tool results)."""
        manager, agent = self._agent(impl, sid)
        messages = [message(index) for index in range(self.config.server_appends)]
        return len(messages), lambda: [manager.append_message(item, agent) for item in messages]

    def sync(self, impl: str, sid: str) -> Work:
        """``sync_agent`` after a change of the agent's state: one agent write each."""
        manager, agent = self._agent(impl, sid)

        def work() -> None:
            for index in range(self.config.server_syncs):
                agent.state.set("step", index)
                manager.sync_agent(agent)

        return self.config.server_syncs, work

    def _seed(self, impl: str, sid: str) -> None:
        """Write a session of ``server_messages`` messages through the implementation's own layout."""
        records = session_messages(self.config.server_messages)
        if impl == "library":
            seed_library(self.client, sid, records)
        elif impl == "bare":
            seed_bare(self.client, sid, records)
        else:
            seed_file(self.context.file_dir / "server" / sid, sid, records)

    def _open(self, impl: str, sid: str) -> Any:
        """Open a new session manager of a seeded session, as another process would (the floor is told its count)."""
        if impl == "library":
            return ValkeySessionManager(session_id=sid, client=self.client, ttl=TTL)
        if impl == "bare":
            repository = BareRepository(self.client, counts={AGENT_ID: self.config.server_messages})
            return RepositorySessionManager(session_id=sid, session_repository=repository)
        return FileSessionManager(session_id=sid, storage_dir=str(self.context.file_dir / "server" / sid))

    def restore(self, impl: str, sid: str) -> Work:
        """Open a new session manager + ``Agent(...)``, restoring all ``server_messages`` messages."""
        self._seed(impl, sid)
        restores = self.config.server_restores
        return restores, lambda: [agent_from(self._open(impl, sid)) for _ in range(restores)]

    def delete(self, impl: str, sid: str) -> Work:
        """``delete_session`` from a session manager opened (untimed) on a session seeded before, as on logout.

        Not from the manager that wrote the session: a user deletes from a new one (README, "Clean up on logout").
        """
        sessions = [f"{sid}-{index}" for index in range(self.config.server_deletes)]
        for session_id in sessions:
            self._seed(impl, session_id)
        opened = [(session_id, self._open(impl, session_id).session_repository) for session_id in sessions]
        return len(opened), lambda: [repository.delete_session(session_id) for session_id, repository in opened]


def run(context: Context) -> dict[str, Any]:
    """Every operation for every implementation, ``server_rounds`` rounds after a warm-up round."""
    config = context.config
    counter = CommandCounter()
    client = counter.client(context.server.port, **context.server.client_options())
    workloads = Workloads(context, client)
    empty(context)
    cases = [(op, impl) for op in OPS for impl in IMPLS if impl != "bare-script" or op in WRITES]
    measured: dict[tuple[str, str], list[dict[str, Any]]] = {case: [] for case in cases}
    for round_ in range(config.server_rounds + 1):
        order = IMPLS if round_ % 2 else IMPLS[::-1]
        for op in OPS:
            for impl in (impl for impl in order if (op, impl) in measured):
                ops, work = getattr(workloads, op)(impl, f"server-{op}-{impl}-{round_}")
                if impl == "file":  # no server: the client's time only
                    start = time.perf_counter()
                    work()
                    summary = {"ops": ops, "wall_us": (time.perf_counter() - start) * 1e6 / ops}
                else:
                    summary = measure(context.client, counter, ops, work).summary()
                if round_:
                    measured[(op, impl)].append(summary)
        context.log(f"server: round {round_}/{config.server_rounds} done" + (" (warm-up)" if not round_ else ""))
    client.close()
    empty(context)
    rows = []
    for (op, impl), summaries in measured.items():
        row: dict[str, Any] = {"op": op, "store": impl, "rounds": len(summaries), **summaries[-1]}
        for name in MEDIANS:
            if name in summaries[-1]:
                row[name] = statistics.median(summary[name] for summary in summaries)
                row[f"{name}_samples"] = [summary[name] for summary in summaries]
        if impl in ("library", "bare-script"):
            pairs = list(zip(summaries, measured[(op, "bare")], strict=True))
            ratios = {name: _paired(pairs, name) for name in RATIOS}
            row["vs_floor"] = {name: statistics.median(values) if values else None for name, values in ratios.items()}
            row["vs_floor_quartiles"] = {name: _quartiles(values) for name, values in ratios.items() if values}
        rows.append(row)
    info = context.client.info("server")
    return {"rows": rows, "io_threads": int(context.client.config_get("io-threads")["io-threads"]), "hz": info["hz"]}


def _paired(pairs: list[tuple[dict[str, Any], dict[str, Any]]], name: str) -> list[float]:
    """List each round's ratio of the library's ``name`` to the floor's (rounds with the floor at 0 left out)."""
    return [lib[name] / floor[name] for lib, floor in pairs if floor[name] > 0]


def _quartiles(values: list[float]) -> list[float]:
    """Return the first and third quartiles (both the value itself when there is one)."""
    if len(values) < 2:
        return [values[0], values[0]]
    quartiles = statistics.quantiles(values, n=4)
    return [quartiles[0], quartiles[2]]
