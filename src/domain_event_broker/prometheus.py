"""Prometheus metrics with prometheus_client (``pip install domain-event-broker[prometheus]``).

>>> from domain_event_broker import prometheus
>>> prometheus.instrument()                     # counters and histograms  # doctest: +SKIP
>>> prometheus.watch_subscribers(["welcome-mailer"])  # queue gauges   # doctest: +SKIP
>>> prometheus.serve_metrics(9100)              # GET :9100/metrics    # doctest: +SKIP

What is exported:

- counters ``domain_events_published_total{routing_key}`` and
  ``domain_events_{handled,retried,dead_lettered,dropped}_total{subscriber,routing_key}``;
- histograms ``domain_event_handler_duration_seconds{subscriber}`` (every
  handler run, whatever its outcome) and ``domain_event_publish_confirm_seconds``
  (from handing an event to the publisher to the broker's confirm);
- gauges, read when scraped (at most every ``min_interval`` seconds):
  ``domain_event_queue_depth{subscriber}`` (events waiting),
  ``domain_event_queue_consumers{subscriber}`` and
  ``domain_event_dead_letters{subscriber}`` for :func:`watch_subscribers`, and
  ``domain_event_outbox_pending`` and ``domain_event_outbox_oldest_pending_seconds``
  for :func:`watch_outbox_store` (an outbox store: the relay's
  ``--metrics-port`` wires it) or :func:`watch_outbox`, which takes two
  functions so that any outbox can be wired to it.

Multi-process servers (gunicorn): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory before the server starts, call :func:`instrument` in each
worker, serve :func:`make_wsgi_app` (or :func:`serve_metrics`) from any of
them, and set ``child_exit = domain_event_broker.prometheus.gunicorn_child_exit``
in the gunicorn config. Every worker's counts are then summed on ``/metrics``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client import (
    make_wsgi_app as _make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import observability
from .observability import Occurrence
from .status import SubscriberStatus, subscriber_status

if TYPE_CHECKING:
    from .outbox.store import OutboxStore

log = logging.getLogger(__name__)

__all__ = [
    "PrometheusMetrics",
    "gunicorn_child_exit",
    "instrument",
    "make_wsgi_app",
    "metrics_registry",
    "serve_metrics",
    "uninstrument",
    "watch_outbox",
    "watch_outbox_store",
    "watch_subscribers",
]

#: Handler durations: from a millisecond to ten minutes.
HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
#: Publish-confirm latencies: from 100 µs to the default publish timeout.
CONFIRM_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30)

_FAILURE_KINDS = ("retried", "dead_lettered", "dropped")


class PrometheusMetrics:
    """A listener (see :func:`observability.add_listener`) that feeds prometheus_client metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.published = Counter(
            "domain_events_published",
            "Events the broker confirmed.",
            ["routing_key"],
            registry=registry,
        )
        self.outcomes = {
            kind: Counter(
                f"domain_events_{kind}",
                f"Events {kind.replace('_', '-')} by a subscriber.",
                ["subscriber", "routing_key"],
                registry=registry,
            )
            for kind in ("handled", *_FAILURE_KINDS)
        }
        self.handler_duration = Histogram(
            "domain_event_handler_duration_seconds",
            "Seconds a handler ran (every outcome).",
            ["subscriber"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )
        self.publish_confirm = Histogram(
            "domain_event_publish_confirm_seconds",
            "Seconds from handing an event to the publisher to the broker's confirm.",
            buckets=CONFIRM_BUCKETS,
            registry=registry,
        )
        self._registry = registry
        self._children: dict[tuple[str, str | None, str], tuple[Any, Any]] = {}

    def __call__(self, occurrence: Occurrence) -> None:
        # Children are cached: labels() costs more than the increment itself.
        key = (occurrence.kind, occurrence.subscriber, occurrence.routing_key)
        children = self._children.get(key)
        if children is None:
            children = self._children_for(*key)
            if children is None:
                return
            self._children[key] = children
        counter, histogram = children
        counter.inc()
        if occurrence.seconds is not None:
            histogram.observe(occurrence.seconds)

    def _children_for(
        self, kind: str, subscriber: str | None, routing_key: str
    ) -> tuple[Any, Any] | None:
        if kind == "published":
            return self.published.labels(routing_key), self.publish_confirm
        counter = self.outcomes.get(kind)
        if counter is None or subscriber is None:
            return None
        return (
            counter.labels(subscriber, routing_key),
            self.handler_duration.labels(subscriber),
        )

    def unregister(self) -> None:
        """Take the metrics out of their registry."""
        for metric in (
            self.published,
            *self.outcomes.values(),
            self.handler_duration,
            self.publish_confirm,
        ):
            self._registry.unregister(metric)


_installed: dict[int, tuple[PrometheusMetrics, Callable[[], None]]] = {}
_lock = threading.Lock()


def instrument(registry: CollectorRegistry | None = None) -> PrometheusMetrics:
    """Count every publish and handler run in ``registry`` (default: prometheus_client's)."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        known = _installed.get(id(registry))
        if known is not None:
            return known[0]
        metrics = PrometheusMetrics(registry)
        _installed[id(registry)] = (metrics, observability.add_listener(metrics))
        return metrics


def uninstrument(registry: CollectorRegistry | None = None) -> None:
    """Stop counting into ``registry`` and take the metrics out of it."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        known = _installed.pop(id(registry), None)
    if known is not None:
        metrics, remove = known
        remove()
        metrics.unregister()


def multiprocess_mode() -> bool:
    """Whether prometheus_client runs in multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_serving: CollectorRegistry | None = None


def metrics_registry() -> CollectorRegistry:
    """The registry to serve on ``/metrics``.

    prometheus_client's default one, or in multi-process mode a registry that
    sums the files of every process (the same one on every call).
    """
    global _serving
    if not multiprocess_mode():
        return REGISTRY
    with _lock:
        if _serving is None:
            _serving = CollectorRegistry()
            multiprocess.MultiProcessCollector(_serving)  # type: ignore[no-untyped-call]
        return _serving


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving :func:`metrics_registry` (mount it at ``/metrics``)."""
    return _make_wsgi_app(metrics_registry() if registry is None else registry)


def serve_metrics(
    port: int = 9100, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> Any:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the server.

    For a subscriber process: call it before ``start_consuming()``.
    """
    server, _thread = start_http_server(
        port, addr, registry=metrics_registry() if registry is None else registry
    )
    return server


def gunicorn_child_exit(_server: object, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: drop a dead worker's live gauges (counters stay)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class _Cached:
    """Calls ``read()`` at most every ``min_interval`` s (scrapes must not load the broker)."""

    def __init__(self, read: Callable[[], Any], min_interval: float) -> None:
        self._read = read
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._value: Any = None
        self._read_at = -float("inf")

    def get(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self._min_interval:
                self._value = self._read()
                self._read_at = now
            return self._value


class SubscriberQueues(Collector):
    """Gauges of subscribers' queues, read from the broker when scraped."""

    def __init__(
        self, names: Sequence[str], connection_settings: str | None = "", min_interval: float = 5.0
    ) -> None:
        self.names = list(names)
        self.connection_settings = connection_settings
        self._statuses = _Cached(self._read, min_interval)

    def _read(self) -> list[SubscriberStatus]:
        statuses = []
        for name in self.names:
            try:
                statuses.append(subscriber_status(name, self.connection_settings))
            except Exception as error:  # a scrape must not fail because the broker is away
                log.warning("cannot read the queues of subscriber %s: %s", name, error)
        return statuses

    def describe(self) -> Iterator[Metric]:
        # Without it, registering would collect at once: reading the broker too early.
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        statuses: list[SubscriberStatus] = self._statuses.get()
        families = self._families()
        for status in statuses:
            for field, family in families.items():
                value = getattr(status, field)
                if value is not None:
                    family.add_metric([status.name], value)
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "waiting": GaugeMetricFamily(
                "domain_event_queue_depth",
                "Events waiting in a subscriber's queue.",
                labels=["subscriber"],
            ),
            "consumers": GaugeMetricFamily(
                "domain_event_queue_consumers",
                "Consumers of a subscriber's queue.",
                labels=["subscriber"],
            ),
            "dead_letters": GaugeMetricFamily(
                "domain_event_dead_letters",
                "Events in a subscriber's dead-letter queue.",
                labels=["subscriber"],
            ),
        }


def watch_subscribers(
    names: Iterable[str],
    connection_settings: str | None = "",
    *,
    registry: CollectorRegistry | None = None,
    min_interval: float = 5.0,
) -> SubscriberQueues:
    """Export queue depth, consumers and dead letters of each subscriber in ``names``."""
    collector = SubscriberQueues(list(names), connection_settings, min_interval)
    (metrics_registry() if registry is None else registry).register(collector)
    return collector


class OutboxGauges(Collector):
    """``domain_event_outbox_pending`` and ``domain_event_outbox_oldest_pending_seconds``."""

    def __init__(
        self,
        pending: Callable[[], int],
        oldest_pending_age: Callable[[], float | None],
        min_interval: float = 5.0,
    ) -> None:
        self._values = _Cached(lambda: (pending(), oldest_pending_age()), min_interval)

    @classmethod
    def of_store(cls, store: OutboxStore, min_interval: float = 5.0) -> OutboxGauges:
        """Gauges read from ``store.status()``: one query per scrape for both."""
        gauges = cls(lambda: 0, lambda: None, min_interval)
        gauges._values = _Cached(lambda: _backlog(store), min_interval)
        return gauges

    def describe(self) -> Iterator[Metric]:
        # Without it, registering would call the functions at once (before the database is up).
        yield GaugeMetricFamily("domain_event_outbox_pending", "")
        yield GaugeMetricFamily("domain_event_outbox_oldest_pending_seconds", "")

    def collect(self) -> Iterator[Metric]:
        try:
            pending, oldest = self._values.get()
        except Exception as error:
            log.warning("cannot read the outbox: %s", error)
            return
        yield GaugeMetricFamily(
            "domain_event_outbox_pending", "Outbox rows not yet published.", value=pending
        )
        yield GaugeMetricFamily(
            "domain_event_outbox_oldest_pending_seconds",
            "Age of the oldest outbox row not yet published (0 when none).",
            value=oldest or 0.0,
        )


def watch_outbox(
    pending: Callable[[], int],
    oldest_pending_age: Callable[[], float | None],
    *,
    registry: CollectorRegistry | None = None,
    min_interval: float = 5.0,
) -> OutboxGauges:
    """Export the outbox backlog: ``pending()`` rows, ``oldest_pending_age()`` seconds (or None)."""
    collector = OutboxGauges(pending, oldest_pending_age, min_interval)
    (metrics_registry() if registry is None else registry).register(collector)
    return collector


def watch_outbox_store(
    store: OutboxStore,
    *,
    registry: CollectorRegistry | None = None,
    min_interval: float = 5.0,
) -> OutboxGauges:
    """Export the backlog of an outbox store (Django's or SQLAlchemy's, as the relay uses).

    >>> prometheus.watch_outbox_store(SQLAlchemyOutboxStore(engine))  # doctest: +SKIP
    >>> prometheus.watch_outbox_store(DjangoOutboxStore("default"))   # doctest: +SKIP

    Pending rows exclude parked ones (``domain-events outbox status`` shows those).
    """
    collector = OutboxGauges.of_store(store, min_interval)
    (metrics_registry() if registry is None else registry).register(collector)
    return collector


def _backlog(store: OutboxStore) -> tuple[int, float | None]:
    try:
        status = store.status()
    finally:
        if getattr(store, "connections_per_thread", False):
            # Scrapes come on short-lived threads: close this thread's connection.
            store.close()
    if status.oldest_pending_at is None:
        return status.pending, None
    age = (datetime.now(timezone.utc) - status.oldest_pending_at).total_seconds()
    return status.pending, max(0.0, age)
