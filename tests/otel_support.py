"""Spans recorded in memory, for the tests of the OpenTelemetry integration.

The ``spans`` fixture (tests/conftest.py) instruments the library with a
provider whose finished spans stay in memory; ``named`` picks some of them.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    """The finished spans whose name starts with ``prefix``."""
    return [span for span in exporter.get_finished_spans() if span.name.startswith(prefix)]
