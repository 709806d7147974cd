"""The benchmark harness still runs end to end (smoke mode, seconds). No timing is asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import SERVER_BINARY

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"turn", "restore", "delete", "concurrency", "memory", "codec"}
PLOTS = {"turn", "restore_n", "restore_k", "delete", "concurrency", "memory"}


def test_smoke_run_measures_every_scenario_for_every_store_and_writes_the_report(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path), "--server", SERVER_BINARY]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads((tmp_path / "benchmarks.json").read_text(encoding="utf-8"))
    assert SCENARIOS <= results.keys()
    assert {row["store"] for row in results["restore"]} == {"library", "naive", "file", "floor", "floor-mget"}
    assert {row["store"] for row in results["delete"]} == {"library", "naive", "file", "floor"}
    assert {row["store"] for row in results["turn"]["buckets"]} == {
        "none",
        "library",
        "naive",
        "file",
        "floor",
        "floor-atomic",
    }
    assert {row["store"] for row in results["concurrency"]} == {"none", "library", "naive", "file", "floor"}
    report = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "## Targets" in report
    assert report.count("_Machine: ") >= 8  # every table names the machine it ran on
    assert {path.name for path in tmp_path.glob("*.png")} == {f"benchmarks-{name}.png" for name in PLOTS}
