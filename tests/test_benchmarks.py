"""The benchmark harness still runs end to end (smoke mode, seconds), and counts what it says it counts.

No timing is asserted here: the numbers go in the report; tests check shapes and counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BINARY

from benchmarks import append_guarantees, clients
from benchmarks.serverstats import CommandCounter, measure
from strands_valkey_session_manager.testing.server import LocalValkey

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"turn", "restore", "delete", "concurrency", "memory", "codec", "server", "saturation"}
PLOTS = {"turn", "restore_n", "restore_k", "delete", "concurrency", "memory", "server", "saturation"}
SERVER_OPS = {"turn", "append", "sync", "restore", "delete"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One smoke run of the whole suite: its output directory and its results."""
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--server", SERVER_BINARY]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    return out, json.loads((out / "benchmarks.json").read_text(encoding="utf-8"))


def test_smoke_run_measures_every_scenario_for_every_store_and_writes_the_report(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    out, results = smoke
    assert SCENARIOS <= results.keys()
    assert {row["store"] for row in results["restore"]} == {"library", "naive", "file", "floor", "floor-mget"}
    assert {row["store"] for row in results["delete"]} == {"library", "naive", "file", "floor"}
    assert {row["store"] for row in results["turn"]["buckets"]} == {"none", "library", "naive", "file", "bare", "floor"}
    assert {row["store"] for row in results["concurrency"]} == {"none", "library", "naive", "file", "floor"}
    report = (out / "benchmarks.md").read_text(encoding="utf-8")
    assert "## Targets" in report
    assert "total server CPU per turn <= 1.15x the same-writes floor's" in report
    assert report.count("_Machine: ") >= 10  # every table names the machine it ran on
    assert {path.name for path in out.glob("*.png")} == {f"benchmarks-{name}.png" for name in PLOTS}


def test_server_cost_is_measured_for_every_operation_against_the_same_writes_floor(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    _, results = smoke
    rows = {(row["op"], row["store"]): row for row in results["server"]["rows"]}
    expected = {(op, store) for op in SERVER_OPS for store in ("library", "bare", "file")}
    assert set(rows) == expected | {(op, "bare-script") for op in ("turn", "append", "sync")}
    turns = results["config"]["server_turns"]
    # The same-writes floor: one bare command per repository call, none run by scripts. A turn writes
    # 2 messages, and the agent record once (the first sync): the window does not move in a few turns.
    assert rows[("turn", "bare")]["top_level"] == {"set": pytest.approx((2 * turns + 1) / turns, abs=1e-3)}
    assert rows[("append", "bare")]["top_level"] == {"set": 1}
    assert rows[("sync", "bare")]["top_level"] == {"set": 1}
    assert rows[("restore", "bare")]["top_level"] == {"get": 2, "mget": 1}
    assert rows[("delete", "bare")]["top_level"] == {"del": 1}
    assert all(rows[(op, "bare")]["nested"] == {} for op in SERVER_OPS)
    # ... and with each write a script call that only SETs.
    assert (rows[("append", "bare-script")]["top_level"], rows[("append", "bare-script")]["nested"]) == (
        {"evalsha": 1},
        {"set": 1},
    )
    # The library: one MULTI/EXEC block per append (an agent's first message: a script call), the commands it
    # runs told apart.
    top_level = rows[("append", "library")]["top_level"]
    assert top_level.get("exec", 0) + top_level.get("fcall", 0) == 1 and top_level.get("multi", 0) < 1
    assert rows[("append", "library")]["calls_all"] > 1
    for op in SERVER_OPS:
        assert {"cpu_us", "main_cpu_us", "exec_us", "vs_floor"} <= rows[(op, "library")].keys()
        assert "cpu_us" not in rows[(op, "file")]  # FileSessionManager: the client side only


def test_saturation_run_reports_turns_per_second_and_the_side_that_saturates(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    _, results = smoke
    saturation = results["saturation"]
    assert saturation["io_threads"] >= 1
    assert {row["store"] for row in saturation["rows"]} == {"none", "library", "bare", "file"}
    for row in saturation["rows"]:
        assert row["turns"] > 0
        assert row["saturated"].split(" ")[0] in {"server", "machine:", "clients", "neither"}


def test_commands_run_by_a_script_or_a_transaction_are_not_counted_as_top_level(server: LocalValkey) -> None:
    counter = CommandCounter()
    client = counter.client(server.port, decode_responses=True)
    stats = server.client()
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"

    def work() -> None:
        for index in range(3):
            client.eval(script, 1, "bench:k", index)
        client.get("bench:k")
        pipe = client.pipeline(transaction=True)
        pipe.set("bench:k", "x").get("bench:k")
        pipe.execute()

    client.ping()  # connect first: the handshake (CLIENT SETINFO) is not part of the work
    cost = measure(stats, counter, 3, work)
    client.delete("bench:k")
    client.close()
    stats.close()
    top_level = {name: calls for name, (calls, _) in cost.top_level().items()}
    # GET ran 5 times: 3 in the script, 1 in the transaction (EXEC runs and times it), 1 sent on its own.
    assert top_level == {"eval": 3, "get": 1, "multi": 1, "exec": 1}
    summary = cost.summary()
    assert summary["calls"] == pytest.approx(6 / 3)
    assert summary["calls_all"] == pytest.approx(14 / 3)  # + SET x4, GET x4 run inside
    assert summary["nested"] == {"get": pytest.approx(4 / 3, abs=1e-3), "set": pytest.approx(4 / 3, abs=1e-3)}


def test_append_guarantees_measures_each_way_of_writing_against_the_floor() -> None:
    rows = append_guarantees.run(writes=20, rounds=2, pace=0.0, binary=SERVER_BINARY)

    assert [name.split(":")[0] for name, *_ in rows][:2] == [
        "`SET EX` (the floor)",
        "+ the session's deadline, never over another message",
    ]
    assert len(rows) == 5 and rows[0][2] == 1.0  # the floor against itself
    assert all(cpu_us > 0 for _, cpu_us, *_ in rows)


def test_client_kinds_are_measured_side_by_side_beside_both_floors() -> None:
    command = [sys.executable, "-m", "benchmarks.clients", "--server", SERVER_BINARY, "--sessions", "1", "--turns"]
    command += ["2", "--sizes", "10", "--repeats", "1", "--saturation", "0.2", "--processes", "1", "--threads", "1"]
    command += ["--rounds", "1"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr

    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    for kind in clients.available():  # every kind: per turn, restore; the synchronous ones saturated too
        measured = [row for row in rows if row.startswith(f"| this library, {kind} |")]
        assert len(measured) == (3 if not clients.KINDS[kind].asyncio else 2), kind
    for floor in ("same-writes floor", "raw floor", "raw floor (MGET + json.loads)"):
        assert f"| {floor}, {clients.PURE} | " in run.stdout
    assert f"| this library, {clients.PURE} | " in run.stdout and "(1.00x)" in run.stdout
