"""Hooks for metrics and tracing: one callback for each thing that happens to an event.

>>> from domain_event_broker.observability import Metrics, add_listener
>>> metrics = Metrics()
>>> remove = add_listener(metrics)
>>> notify(Occurrence("handled", "user.registered", "e1", subscriber="mailer", seconds=0.02))
>>> metrics.count("handled", subscriber="mailer")
1
>>> remove()

What is reported (``Occurrence.kind``):

- ``published``: the broker confirmed an event (``subscriber`` is ``None``);
- ``handled``: a handler returned; ``seconds`` is how long it ran;
- ``retried``: a handler raised :class:`Retry` and a delayed copy was scheduled;
- ``dead_lettered``: the event went to the dead-letter queue;
- ``dropped``: it failed and the subscriber keeps no dead letters.

Listeners run on the thread where it happened (a publisher's caller, a
subscriber's worker) and must be quick; an exception in one is logged, never
raised into the library.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Occurrence:
    """Something that happened to one event."""

    kind: str
    routing_key: str
    event_id: str | None
    subscriber: str | None = None
    seconds: float | None = None


Listener = Callable[[Occurrence], object]
_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener(occurrence)`` for every occurrence; returns a function that removes it."""
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)

    def remove() -> None:
        global _listeners
        with _lock:
            _listeners = tuple(known for known in _listeners if known is not listener)

    return remove


def listening() -> bool:
    """Whether anyone listens (the library skips building occurrences otherwise)."""
    return bool(_listeners)


def notify(occurrence: Occurrence) -> None:
    """Hand ``occurrence`` to every listener."""
    for listener in _listeners:
        try:
            listener(occurrence)
        except Exception:
            log.exception(
                "metrics listener %r failed on %s of event %s (%s)",
                listener,
                occurrence.kind,
                occurrence.event_id,
                occurrence.routing_key,
            )


class Metrics:
    """A listener that counts occurrences and sums handler time, in this process.

    ``prometheus_text()`` renders them in the Prometheus text format, for a
    ``/metrics`` endpoint, without a dependency on a Prometheus client.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._handler_seconds: defaultdict[str, float] = defaultdict(float)

    def __call__(self, occurrence: Occurrence) -> None:
        key = (occurrence.kind, occurrence.subscriber or "", occurrence.routing_key)
        with self._lock:
            self._counts[key] += 1
            if occurrence.seconds is not None and occurrence.subscriber is not None:
                self._handler_seconds[occurrence.subscriber] += occurrence.seconds

    def count(
        self, kind: str, *, subscriber: str | None = None, routing_key: str | None = None
    ) -> int:
        """How many ``kind`` occurrences, optionally of one subscriber or routing key."""
        with self._lock:
            return sum(
                number
                for (seen_kind, seen_subscriber, seen_key), number in self._counts.items()
                if seen_kind == kind
                and (subscriber is None or seen_subscriber == subscriber)
                and (routing_key is None or seen_key == routing_key)
            )

    def handler_seconds(self, subscriber: str) -> float:
        """Total seconds the handlers of ``subscriber`` ran."""
        with self._lock:
            return self._handler_seconds.get(subscriber, 0.0)

    def prometheus_text(self) -> str:
        """The counters in the Prometheus text exposition format."""
        lines = [
            "# HELP domain_events_total Domain events by what happened to them.",
            "# TYPE domain_events_total counter",
        ]
        with self._lock:
            for (kind, subscriber, routing_key), number in sorted(self._counts.items()):
                labels = f'kind="{kind}",subscriber="{subscriber}",routing_key="{routing_key}"'
                lines.append(f"domain_events_total{{{labels}}} {number}")
            lines += [
                "# HELP domain_event_handler_seconds_total Seconds spent in handlers.",
                "# TYPE domain_event_handler_seconds_total counter",
            ]
            for subscriber, seconds in sorted(self._handler_seconds.items()):
                lines.append(
                    f'domain_event_handler_seconds_total{{subscriber="{subscriber}"}} {seconds:.6f}'
                )
        return "\n".join(lines) + "\n"
