"""Sizes and repeats of each run mode, and the stores' names and order (shared by the report and the plots).

Modes: ``full`` (the report), ``quick`` (< 2 min), ``smoke`` (seconds, for CI).
"""

from __future__ import annotations

from dataclasses import dataclass

STORE_ORDER = ("library", "naive", "file", "bare", "bare-script", "floor", "floor-mget", "none")
STORE_LABEL = {
    "library": "this library",
    "naive": "naive Valkey (SCAN)",
    "file": "FileSessionManager",
    "bare": "same-writes floor (bare repository)",
    "bare-script": "same-writes floor, each write a script",
    "floor": "floor (raw valkey-py)",
    "floor-mget": "floor, MGET only",
    "none": "no session manager",
}


@dataclass(frozen=True)
class Config:
    """How big and how often each scenario runs."""

    mode: str
    #: per-turn: the conversation grows to this many messages; how many fresh runs of that.
    turn_messages: int
    turn_runs: int
    #: restore: messages per session (N), unrelated keys in the server (K), timed rounds.
    restore_n: tuple[int, ...]
    restore_k: tuple[int, ...]
    restore_repeats: int
    #: delete_session: messages per session, timed rounds (at the smallest and largest K).
    delete_n: tuple[int, ...]
    delete_repeats: int
    #: many sessions at once: (processes, threads per process), timed turns per thread, rounds of each.
    concurrency: tuple[tuple[int, int], ...]
    concurrency_turns: int
    concurrency_rounds: int
    #: memory: messages stored per size; (de)serialisation: messages per timing.
    memory_messages: int
    codec_messages: int
    codec_repeats: int
    #: server cost: agent turns per run (two messages each, so 0 to 2x that many stored), appends, agent syncs,
    #: restores and deletes per run (of sessions of ``server_messages``), rounds (one warm-up round more).
    server_turns: int
    server_messages: int
    server_appends: int
    server_syncs: int
    server_restores: int
    server_deletes: int
    server_rounds: int
    #: saturation: servers' ``--io-threads`` (capped at the cores; the first is the run, the others compared),
    #: client processes x threads each, seconds per run, rounds.
    saturation_io_threads: tuple[int, ...]
    saturation_clients: tuple[tuple[int, int], ...]
    saturation_seconds: float
    saturation_rounds: int

    def repeats_for(self, n: int) -> int:
        """Fewer rounds for the largest sessions, whose single timings are long and steady."""
        return max(3, self.restore_repeats // 3) if n >= 10_000 else self.restore_repeats


MODES = {
    "full": Config(
        mode="full",
        turn_messages=1000,
        turn_runs=3,
        restore_n=(10, 100, 1000, 10_000),
        restore_k=(0, 100_000, 1_000_000),
        restore_repeats=15,
        delete_n=(100, 1000, 10_000),
        delete_repeats=9,
        concurrency=((1, 1), (1, 4), (1, 8), (2, 4), (2, 8), (4, 4)),
        concurrency_turns=40,
        concurrency_rounds=3,
        memory_messages=1000,
        codec_messages=1000,
        codec_repeats=15,
        server_turns=100,
        server_messages=200,
        server_appends=200,
        server_syncs=100,
        server_restores=20,
        server_deletes=20,
        server_rounds=15,
        saturation_io_threads=(2, 1),
        saturation_clients=((2, 4), (4, 4)),
        saturation_seconds=5.0,
        saturation_rounds=1,
    ),
    "quick": Config(
        mode="quick",
        turn_messages=400,
        turn_runs=1,
        restore_n=(10, 100, 1000),
        restore_k=(0, 1_000_000),
        restore_repeats=5,
        delete_n=(100, 1000),
        delete_repeats=4,
        concurrency=((1, 1), (1, 4), (2, 4)),
        concurrency_turns=15,
        concurrency_rounds=1,
        memory_messages=200,
        codec_messages=1000,
        codec_repeats=5,
        server_turns=100,
        server_messages=200,
        server_appends=200,
        server_syncs=100,
        server_restores=10,
        server_deletes=10,
        server_rounds=3,
        saturation_io_threads=(2, 1),
        saturation_clients=((4, 4),),
        saturation_seconds=3.0,
        saturation_rounds=1,
    ),
    "smoke": Config(
        mode="smoke",
        turn_messages=8,
        turn_runs=1,
        restore_n=(10,),
        restore_k=(0, 1000),
        restore_repeats=2,
        delete_n=(10,),
        delete_repeats=2,
        concurrency=((1, 2),),
        concurrency_turns=2,
        concurrency_rounds=1,
        memory_messages=10,
        codec_messages=20,
        codec_repeats=2,
        server_turns=4,
        server_messages=10,
        server_appends=4,
        server_syncs=4,
        server_restores=2,
        server_deletes=2,
        server_rounds=1,
        saturation_io_threads=(2,),
        saturation_clients=((1, 2),),
        saturation_seconds=0.5,
        saturation_rounds=1,
    ),
}
