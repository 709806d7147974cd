"""Capture the spans and metrics of a block of code, in memory: for tests, benchmarks and docs.

OpenTelemetry's global tracer and meter providers can be set only once per process, and Strands reads
them: :func:`capture` sets both the first time it is used, with a sampler that records nothing outside a
``with capture()`` block, so code that runs before or after (other tests) costs what it costs with no
provider but the API's no-op spans.

Example:
    ```python
    with capture() as seen:
        agent("hello")
    assert [span.name for span in seen.spans()] == [...]
    ```
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class _Switch(Sampler):
    """Samples every span while a capture runs, none otherwise."""

    def __init__(self) -> None:
        self.on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "strands_valkey_session_manager.testing.telemetry switch"


class Captured:
    """What a ``with capture()`` block emitted: finished spans, and metric points (deltas since it began)."""

    def __init__(self, exporter: InMemorySpanExporter, reader: InMemoryMetricReader) -> None:
        self._exporter = exporter
        self._reader = reader
        self._points: dict[str, list[Any]] = {}

    def spans(self, name_prefix: str = "") -> list[ReadableSpan]:
        """Finished spans, in the order they ended (those whose name starts with ``name_prefix``)."""
        return [span for span in self._exporter.get_finished_spans() if span.name.startswith(name_prefix)]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric data points by instrument name, added up over every collection since the block began."""
        data = self._reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    self._points.setdefault(metric.name, []).extend(metric.data.data_points)
        return self._points

    def total(self, name: str, **attributes: Any) -> float:
        """Sum of a counter's points (a histogram's counts) whose attributes include ``attributes``."""
        points = [
            point
            for point in self.metrics().get(name, [])
            if all((point.attributes or {}).get(key) == value for key, value in attributes.items())
        ]
        return float(sum(point.count if hasattr(point, "count") else point.value for point in points))


_SWITCH = _Switch()
_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader(
    preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
)
_INSTALLED = False
_MUTEX = threading.Lock()


def install() -> None:
    """Set the global tracer and meter providers (once per process; a no-op after that)."""
    global _INSTALLED
    with _MUTEX:
        if _INSTALLED:
            return
        provider = TracerProvider(sampler=_SWITCH)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
        _INSTALLED = True


@contextmanager
def capture() -> Iterator[Captured]:
    """Record every span and metric the block emits (one capture at a time per process)."""
    install()
    with _MUTEX:
        _READER.get_metrics_data()  # drop the deltas of what ran before
        _EXPORTER.clear()
        _SWITCH.on = True
    try:
        yield Captured(_EXPORTER, _READER)
    finally:
        _SWITCH.on = False
