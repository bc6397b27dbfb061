"""What instrumentation costs: the consume and publish benches with it off and on, in one run.

"on" means everything an operator would turn on: OpenTelemetry (the SDK with a batch span
processor and an exporter that drops the spans), Prometheus counters and histograms
(prometheus_client, one process), and the health probe's stuck-handler middleware. Each variant
turns it on, runs, and turns it off again, so the rounds of "off" and "on" interleave.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from domain_event_broker import otel, prometheus
from domain_event_broker.health import HealthProbe
from domain_event_broker.publisher import close_shared_publishers

from .consume import ROUTING_KEY as CONSUMED
from .consume import declare, forget, ours_drain
from .harness import Context, Row, Series, interleave, unique
from .publish import ROUTING_KEY as PUBLISHED
from .publish import _Sink, ours_loop, ours_many


class _DroppingExporter:
    """A span exporter that drops what it is given (the cost of export itself is not ours)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@contextlib.contextmanager
def instrumented(traces: bool = True, metrics: bool = True) -> Iterator[None]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from prometheus_client import CollectorRegistry

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DroppingExporter()))  # type: ignore[arg-type]
    registry = CollectorRegistry()
    probe = HealthProbe()
    if traces:
        otel.instrument(provider)
    if metrics:
        prometheus.instrument(registry)
        probe.install()
    try:
        yield
    finally:
        otel.uninstrument()
        prometheus.uninstrument(registry)
        probe.uninstall()
        provider.shutdown()


def _with(
    setting: dict[str, bool] | None,
    prepare: Callable[[], object],
    function: Callable[[], float],
    count: int,
    cpu: list[float],
) -> Callable[[], float]:
    """Run ``prepare()``, then ``function`` with instrumentation per ``setting``; note this
    process's CPU microseconds per event in ``cpu`` (steadier than throughput on a shared
    machine)."""

    def variant() -> float:
        prepare()
        with contextlib.ExitStack() as stack:
            if setting is not None:
                stack.enter_context(instrumented(**setting))
            started = time.process_time()
            rate = function()
            cpu.append((time.process_time() - started) / count * 1e6)
        return rate

    return variant


SETTINGS: dict[str, dict[str, bool] | None] = {
    "off": None,
    "metrics + health": {"traces": False, "metrics": True},
    "traces": {"traces": True, "metrics": False},
    "all on": {"traces": True, "metrics": True},
}


def _rows(
    group: str,
    case: str,
    samples: dict[str, list[float]],
    cpu: dict[str, list[float]],
    note: str,
) -> list[Row]:
    off = Series(f"{case}, instrumentation off", samples["off"])
    cpu_off = Series(f"{case}, off: CPU per event", cpu["off"])
    rows = []
    for label in SETTINGS:
        if label == "off":
            continue
        rows.append(
            Row(
                group,
                f"{case}, {label}",
                "events/s",
                Series(f"{case}, {label}", samples[label]),
                off,
                note=note,
            )
        )
        rows.append(
            Row(
                group,
                f"{case}, {label}: CPU per event",
                "us",
                Series(f"{case}, {label}: CPU per event", cpu[label]),
                cpu_off,
                note="this process's CPU time (all threads) per event, in microseconds",
            )
        )
    return rows


def case_consume_instrumented(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("consume-instr")
    declare(broker, name)

    def fill() -> None:
        broker.fill(name, CONSUMED, count)

    def drain() -> float:
        return ours_drain(broker.url, name, count)

    cpu: dict[str, list[float]] = {label: [] for label in SETTINGS}
    try:
        samples = interleave(
            context,
            {
                label: _with(setting, fill, drain, count, cpu[label])
                for label, setting in SETTINGS.items()
            },
        )
    finally:
        forget(broker, name)
    return _rows(
        "instrumentation",
        "consume",
        samples,
        cpu,
        f"Subscriber defaults, no-op handler, draining {count} events; ratio to off",
    )


def case_publish_instrumented(context: Context) -> list[Row]:
    url = context.broker.url
    loop_count = context.size(1500, 300)
    many_count = context.size(10000, 2000)
    sink = _Sink(context)

    def run(function: Callable[[str, int], float], count: int) -> Callable[[], float]:
        return lambda: function(url, count)

    rows: list[Row] = []
    try:
        for case, function, count in (
            ("publish_domain_event loop", ours_loop, loop_count),
            ("publish_many", ours_many, many_count),
        ):
            cpu: dict[str, list[float]] = {label: [] for label in SETTINGS}
            samples = interleave(
                context,
                {
                    label: _with(setting, sink.empty, run(function, count), count, cpu[label])
                    for label, setting in SETTINGS.items()
                },
            )
            rows += _rows(
                "instrumentation", case, samples, cpu, f"{count} events a round to {PUBLISHED}"
            )
    finally:
        close_shared_publishers()
        sink.delete()
    return rows


CASES = {
    "consume-instrumented": case_consume_instrumented,
    "publish-instrumented": case_publish_instrumented,
}
OPTIONAL = tuple(CASES)
