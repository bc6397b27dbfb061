"""Running a relay as a command: its options, signals, health probe and metrics.

Shared by ``manage.py relay_domain_events`` and ``domain-events-relay``; the
relay itself (:mod:`.relay`) knows nothing of argparse, signals or HTTP.
"""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from .. import signals
from ..core.defaults import OUTBOX_MAX_RETRY_DELAY, OUTBOX_RETRY_DELAY
from ..health import STUCK_AFTER, HealthProbe
from .attempts import MAX_ATTEMPTS
from .relay import BATCH_SIZE, MAX_BACKOFF, MAX_MESSAGE_SIZE, POLL_INTERVAL, RETENTION, OutboxRelay

# The relay's own logger: operators filter its lines by that name.
log = logging.getLogger(__package__ + ".relay")


def stop_on_signals(relay: OutboxRelay) -> Callable[[], None]:
    """Make SIGTERM and SIGINT stop ``relay`` after its batch; return a function that undoes it.

    A second signal stops at once (the batch in flight stays pending).
    Only possible in the main thread; elsewhere it does nothing.
    """
    return signals.stop_on_signals(
        relay.stop,
        stopping="stopping the outbox relay after the batch in flight",
        at_once="the batch in flight stays pending",
    )


def add_relay_arguments(parser: ArgumentParser) -> None:
    """The relay's options, shared by ``relay_domain_events`` and ``domain-events-relay``."""
    parser.add_argument("--once", action="store_true", help="exit when nothing is pending")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL,
        help="seconds between looks when nothing is pending",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=RETENTION / timedelta(days=1),
        help="delete sent rows after this many days (0: at once; -1: never)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=MAX_BACKOFF,
        help="longest pause between attempts while the broker is unreachable",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=MAX_MESSAGE_SIZE,
        help="refuse a row whose payload is larger (bytes; the broker's max_message_size)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=MAX_ATTEMPTS,
        help="park a row after the broker refused its event this many times",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=OUTBOX_RETRY_DELAY,
        help="seconds before a refused row is tried again (doubling each time)",
    )
    parser.add_argument(
        "--max-retry-delay",
        type=float,
        default=OUTBOX_MAX_RETRY_DELAY,
        help="longest pause between two attempts of a refused row",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        help="serve /livez, /readyz and /healthz on this port (see domain_event_broker.health)",
    )
    parser.add_argument(
        "--stuck-after",
        type=float,
        default=STUCK_AFTER,
        help="seconds a batch may run before /livez fails",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (the [prometheus] extra): published "
        "events, confirm latency, outbox pending rows and the oldest one's age",
    )


def serve_probes(
    relay: OutboxRelay,
    *,
    health_port: int | None = None,
    metrics_port: int | None = None,
    stuck_after: float = STUCK_AFTER,
    addr: str = "0.0.0.0",
) -> Callable[[], None]:
    """Serve the relay's health probe and/or Prometheus metrics from daemon threads.

    The same port for both serves ``/metrics`` beside the probe's paths.
    Returns a function that stops serving (and takes the outbox gauges out of
    the registry). Metrics need prometheus_client (the ``[prometheus]`` extra).
    """
    stops: list[Callable[[], None]] = []
    registry = None
    if metrics_port is not None:
        from .. import prometheus

        prometheus.instrument()
        registry = prometheus.metrics_registry()
        gauges = prometheus.watch_outbox_store(relay.store, registry=registry)
        stops.append(lambda: registry.unregister(gauges))
    try:
        if health_port is not None:
            probe = HealthProbe(relay, stuck_after=stuck_after)
            served = registry if metrics_port == health_port else None
            stops.append(_stopper(probe.serve(health_port, addr, metrics=served)))
            log.info("outbox relay health probe on port %d", health_port)
        if metrics_port is not None and metrics_port != health_port:
            from .. import prometheus

            stops.append(_stopper(prometheus.serve_metrics(metrics_port, addr, registry)))
        if metrics_port is not None:
            log.info("outbox relay metrics on port %d (/metrics)", metrics_port)
    except BaseException:
        _stop_all(stops)
        raise
    return lambda: _stop_all(stops)


def serve_probes_from(relay: OutboxRelay, parsed: Mapping[str, Any]) -> Callable[[], None]:
    """:func:`serve_probes` with options parsed by :func:`add_relay_arguments`."""
    return serve_probes(
        relay,
        health_port=parsed.get("health_port"),
        metrics_port=parsed.get("metrics_port"),
        stuck_after=parsed.get("stuck_after") or STUCK_AFTER,
    )


def _stopper(server: Any) -> Callable[[], None]:
    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


def _stop_all(stops: Sequence[Callable[[], None]]) -> None:
    for stop in reversed(stops):
        try:
            stop()
        except Exception:
            log.debug("stopping a probe server failed", exc_info=True)


def relay_options(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`OutboxRelay` keyword arguments from options parsed by :func:`add_relay_arguments`."""
    days = parsed["retention_days"]
    return {
        "batch_size": parsed["batch_size"],
        "poll_interval": parsed["poll_interval"],
        "retention": None if days < 0 else timedelta(days=days),
        "max_backoff": parsed["max_backoff"],
        "max_message_size": parsed["max_message_size"],
        "max_attempts": parsed["max_attempts"],
        "retry_delay": parsed["retry_delay"],
        "max_retry_delay": parsed["max_retry_delay"],
    }
