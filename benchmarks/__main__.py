"""``python -m benchmarks [--quick | --smoke] [--out DIR] [--only SCENARIO ...]``: run, then write the report.

Starts its own valkey-server (``LocalValkey``, with ``enable-debug-command`` for ``DEBUG POPULATE``),
runs every scenario, and writes ``benchmarks.md``, ``benchmarks.json`` and PNG plots into ``--out``
(default ``docs/``). Needs the ``bench`` extra (matplotlib) unless ``--no-plots``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from strands_valkey_session_manager.testing.server import LocalValkey

from . import (
    report,
    scenario_codec,
    scenario_concurrency,
    scenario_delete,
    scenario_memory,
    scenario_restore,
    scenario_saturation,
    scenario_server,
    scenario_turn,
)
from .config import MODES
from .seed import Context
from .timing import machine

SCENARIOS = {
    "turn": scenario_turn.run,
    "restore": scenario_restore.run,
    "delete": scenario_delete.run,
    "concurrency": scenario_concurrency.run,
    "memory": scenario_memory.run,
    "codec": scenario_codec.run,
    "server": scenario_server.run,
    "saturation": scenario_saturation.run,
}


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="a run under two minutes")
    mode.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="seconds: proves it runs")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where to write the report (default: docs)")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--server", default=None, help="valkey-server binary (default: from PATH)")
    parser.add_argument("--from-json", type=Path, help="do not run: re-render the report from a benchmarks.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks and write the report; returns the results."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        report.write(args.out, results, plots=not args.no_plots)
        return results
    config = MODES[args.mode or "full"]
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    server_args = ["--enable-debug-command", "local", "--maxmemory-policy", "noeviction"]
    with LocalValkey(binary=args.server, args=server_args) as server, tempfile.TemporaryDirectory() as files:
        client = server.client()
        context = Context(config=config, server=server, client=client, file_dir=Path(files), log=log)
        results: dict[str, Any] = {"mode": config.mode, "machine": machine(client), "config": vars(config).copy()}
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            log(f"{name}: start")
            results[name] = scenario(context)
        results["load_average_end"] = machine(client)["load_average"]
        client.close()
    results["elapsed_s"] = time.monotonic() - started
    results["command"] = " ".join(["python -m benchmarks", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    report.write(args.out, results, plots=not args.no_plots)
    log(f"wrote {args.out / 'benchmarks.md'}")
    return results


if __name__ == "__main__":
    main()
