"""What OpenTelemetry costs per turn: ``python -m benchmarks.telemetry_overhead [--turns N] [--runs R]``.

Time spent in the session manager's hooks per turn (``scenario_turn.HookTimer``), for the library as it
is (``traced``) and for the same class with every traced method replaced by the function it wraps
(``untraced``: today's code, but for the few notes, a context variable read each, on the write paths),
and ``untraced`` again (the A/A control: its ratio is the run's noise), interleaved turn by turn in random
order in one process:

1. with no tracer or meter provider configured (the API's no-op ones: what every user gets by default);
2. then, in the same run, with the SDK's providers set (every span sampled, a batch span processor whose
   exporter drops the spans, a meter provider with a reader): the cost of being observed, without I/O.

Prints the medians, the ratio of medians traced/untraced, and the median of the per-turn ratios (each turn
of ``traced`` against the ``untraced`` turn next to it), of each phase, as JSON (docs/observability.md).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from strands import Agent
from strands.agent.conversation_manager import NullConversationManager

from strands_valkey_session_manager import ValkeySessionManager
from strands_valkey_session_manager.testing.model import ScriptedModel
from strands_valkey_session_manager.testing.server import LocalValkey

from .scenario_turn import HookTimer


class Untraced(ValkeySessionManager):
    """The manager with each traced method replaced by the method it wraps: no span, no metric."""


for _name, _method in vars(ValkeySessionManager).items():
    if callable(_method) and hasattr(_method, "__wrapped__"):
        setattr(Untraced, _name, _method.__wrapped__)


class _Dropped(SpanExporter):
    """Exports nowhere: the SDK's work is measured, not the network's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class UntracedAgain(Untraced):
    """The same as ``untraced``: the A/A control, whose ratio to ``untraced`` is the run's noise."""


STORES = {"untraced": Untraced, "traced": ValkeySessionManager, "untraced-again": UntracedAgain}


def phase(client: Any, name: str, runs: int, turns: int) -> dict[str, Any]:
    """Per-turn hook time of each store, ``runs`` conversations of ``turns`` turns, turns interleaved."""
    shuffle = random.Random(7).shuffle
    times: dict[str, list[float]] = {store: [] for store in STORES}
    for run in range(runs):
        agents, timers = {}, {}
        for store, kind in STORES.items():
            manager = kind(f"otel-{len(name)}-{run}-{store}", client)
            timers[store] = HookTimer(manager)
            agents[store] = Agent(
                agent_id="a",
                model=ScriptedModel(),
                session_manager=manager,
                conversation_manager=NullConversationManager(),
                callback_handler=None,
            )
            agents[store]("warm-up")
        for turn in range(turns):
            order = list(STORES)
            shuffle(order)
            for store in order:
                timers[store].total = 0.0
                agents[store](f"prompt {turn}")
                times[store].append(timers[store].total)
    medians = {store: statistics.median(values) * 1e6 for store, values in times.items()}
    traced, control = (
        statistics.median(a / b for a, b in zip(times[store], times["untraced"], strict=True))
        for store in ("traced", "untraced-again")
    )
    return {
        "phase": name,
        "turns": len(times["traced"]),
        "hooks_median_us": {store: round(value, 1) for store, value in medians.items()},
        "ratio": round(medians["traced"] / medians["untraced"], 4),
        "noise_ratio": round(medians["untraced-again"] / medians["untraced"], 4),
        "paired_ratio": round(traced, 4),  # the median over turns of traced / untraced in the same turn
        "paired_noise_ratio": round(control, 4),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run both phases against a throwaway valkey-server; print and return the results."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.telemetry_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3, help="conversations per store and phase")
    parser.add_argument("--turns", type=int, default=100, help="turns per conversation")
    args = parser.parse_args(argv)
    results = []
    with LocalValkey() as server:
        client = server.client()
        started = time.monotonic()
        results.append(phase(client, "no provider", args.runs, args.turns))
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_Dropped()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        results.append(phase(client, "SDK providers, every span sampled", args.runs, args.turns))
        provider.shutdown()
        for result in results:
            result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
