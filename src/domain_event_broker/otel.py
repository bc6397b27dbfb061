"""OpenTelemetry tracing of domain events (``pip install domain-event-broker[otel]``).

>>> from domain_event_broker import otel
>>> otel.instrument()  # doctest: +SKIP

Built only on the library's public hooks (:mod:`.observability`): a header
injector, a listener and a handler middleware, so anything it does a user can
do too.

- **Publish.** On the publishing caller's thread, a ``send`` span (kind
  PRODUCER, a child of whatever span is current there, e.g. the web request)
  starts and its W3C trace context goes into the message headers
  (``traceparent``, ``tracestate``, and baggage). It ends when the broker's
  confirm is reported (so its duration is the publish-confirm latency).
- **Outbox.** ``publish_on_commit(..., outbox=True)`` and ``add_event`` take
  the trace context when the row is written: a ``create`` span (kind
  PRODUCER, ended at once) whose context is stored with the row. The relay
  publishes the row with it and adds no context of its own, so the handlers'
  spans are children of the ``create`` span, in the trace of the request that
  wrote the row. The relay's ``publish`` span (ended at the confirm) is
  another child of the ``create`` span.
- **Handle.** Each handler call runs in a ``process`` span (kind CONSUMER)
  that is the *child* of the publish span and also *links* to it. The OTel
  messaging conventions require the link (it works for batches too) and allow
  the parent for single-message processing; the parent puts the request, the
  publish and every handler run in one trace, which is what one wants to see.
- **Retries and dead letters** keep the headers, so each retried run is another
  child of the same publish span; a failed run records the exception.
- **Replays** (``replay_event``, ``domain-events dead-letters replay``) start a
  *new* trace whose ``process`` span links back to the original publish: a
  replay may come days later, and one trace should not span them.

Attributes follow the messaging semantic conventions (``messaging.system`` =
``rabbitmq``, ``messaging.destination.name`` = the exchange,
``messaging.rabbitmq.destination.routing_key``, ``messaging.message.id``,
``messaging.operation.type``/``.name``,
``messaging.destination.subscription.name`` = the subscriber's queue) plus
``domain_event.retries`` (earlier deliveries to this subscriber) and
``domain_event.replayed``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from . import observability
from .errors import Retry
from .observability import Handling, Occurrence
from .topology import DEFAULT_EXCHANGE, REPLAYED_HEADER

__all__ = ["DomainEventBrokerInstrumentor", "instrument", "uninstrument"]

# Messaging semantic conventions (opentelemetry-semantic-conventions 0.66b, incubating).
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_DESTINATION_SUBSCRIPTION_NAME = "messaging.destination.subscription.name"
MESSAGING_RABBITMQ_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
ERROR_TYPE = "error.type"
# Our own (no convention names a retry count).
RETRIES = "domain_event.retries"
REPLAYED = "domain_event.replayed"
RETRY_DELAY = "domain_event.retry_delay"

#: Publish spans waiting for their confirm; older or surplus ones are ended
#: unconfirmed (a publish that failed or went to no broker reports no confirm).
MAX_PENDING_PUBLISHES = 10_000
PENDING_PUBLISH_SECONDS = 120.0

_installed: _Tracing | None = None
_install_lock = threading.Lock()


def instrument(
    tracer_provider: trace.TracerProvider | None = None, *, exchange: str = DEFAULT_EXCHANGE
) -> None:
    """Trace every publish and handler call from now on (idempotent).

    ``tracer_provider``: default the global one. ``exchange``: the name recorded
    as the destination of publishes.
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            return
        _installed = _Tracing(trace.get_tracer(__name__, tracer_provider=tracer_provider), exchange)
        _installed.install()


def uninstrument() -> None:
    """Stop tracing (spans already started end normally)."""
    global _installed
    with _install_lock:
        tracing, _installed = _installed, None
    if tracing is not None:
        tracing.uninstall()


class DomainEventBrokerInstrumentor:
    """The usual ``Instrumentor().instrument()`` / ``.uninstrument()`` interface."""

    def instrument(self, **kwargs: Any) -> None:
        instrument(kwargs.get("tracer_provider"), exchange=kwargs.get("exchange", DEFAULT_EXCHANGE))

    def uninstrument(self, **_kwargs: Any) -> None:
        uninstrument()


class _Tracing:
    def __init__(self, tracer: trace.Tracer, exchange: str) -> None:
        self.tracer = tracer
        self.exchange = exchange
        self._lock = threading.Lock()
        self._publishing: OrderedDict[str, tuple[Span, float]] = OrderedDict()
        self._removers: list[Callable[[], None]] = []

    def install(self) -> None:
        self._removers = [
            observability.add_header_injector(self.inject),
            observability.add_listener(self.on_occurrence),
            observability.add_middleware(self.middleware),
            observability.add_middleware(self.async_middleware),
        ]

    def uninstall(self) -> None:
        for remove in self._removers:
            remove()
        with self._lock:
            pending, self._publishing = list(self._publishing.values()), OrderedDict()
        for span, _ in pending:
            _end_unconfirmed(span)

    # Publish ----------------------------------------------------------------------
    def inject(self, routing_key: str, message_id: str | None) -> dict[str, Any]:
        # Written to the outbox: the relay publishes it later, in another process,
        # with these headers. A "create" span ends now; the handlers continue it.
        later = observability.publishing_later()
        # An outbox row's publish by the relay: its span goes into the trace
        # stored with the row (the headers sent stay the stored ones).
        stored = observability.stored_headers()
        span = self.tracer.start_span(
            f"create {self.exchange}" if later else f"publish {self.exchange}",
            context=None if stored is None else propagate.extract(_carrier(stored)),
            kind=SpanKind.PRODUCER,
            attributes={
                MESSAGING_SYSTEM: "rabbitmq",
                MESSAGING_DESTINATION_NAME: self.exchange,
                MESSAGING_RABBITMQ_ROUTING_KEY: routing_key,
                MESSAGING_OPERATION_TYPE: "create" if later else "send",
                MESSAGING_OPERATION_NAME: "outbox" if later else "publish",
                **({MESSAGING_MESSAGE_ID: message_id} if message_id else {}),
            },
        )
        headers: dict[str, Any] = {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        if later:
            span.end()
            return headers
        if message_id is None:
            span.end()  # nothing to match its confirm with
            return headers
        now = time.monotonic()
        with self._lock:
            replaced = self._publishing.pop(message_id, None)
            self._publishing[message_id] = (span, now)
            expired = self._expired(now)
        for old in ([replaced[0]] if replaced else []) + expired:
            _end_unconfirmed(old)
        return headers

    def _expired(self, now: float) -> list[Span]:
        expired = []
        publishing = self._publishing
        while publishing:
            message_id, (span, started) = next(iter(publishing.items()))
            if len(publishing) <= MAX_PENDING_PUBLISHES and now - started < PENDING_PUBLISH_SECONDS:
                break
            del publishing[message_id]
            expired.append(span)
        return expired

    def on_occurrence(self, occurrence: Occurrence) -> None:
        if occurrence.kind != "published" or occurrence.event_id is None:
            return
        with self._lock:
            entry = self._publishing.pop(occurrence.event_id, None)
        if entry is not None:
            entry[0].set_attribute("domain_event.confirmed", True)
            entry[0].end()

    # Handle -----------------------------------------------------------------------
    def _start_process_span(self, handling: Handling) -> Span:
        headers = handling.headers
        creation = propagate.extract(_carrier(headers))
        creation_span = trace.get_current_span(creation).get_span_context()
        replayed = _int(headers.get(REPLAYED_HEADER))
        event = handling.event
        attributes: dict[str, Any] = {
            MESSAGING_SYSTEM: "rabbitmq",
            MESSAGING_DESTINATION_NAME: handling.exchange,
            MESSAGING_DESTINATION_SUBSCRIPTION_NAME: handling.subscriber,
            MESSAGING_RABBITMQ_ROUTING_KEY: event.routing_key,
            MESSAGING_MESSAGE_ID: event.uuid_string,
            MESSAGING_OPERATION_TYPE: "process",
            MESSAGING_OPERATION_NAME: "process",
            RETRIES: event.retries,
        }
        if replayed:
            attributes[REPLAYED] = replayed
        links = (
            [Link(creation_span, {REPLAYED: replayed} if replayed else None)]
            if creation_span.is_valid
            else []
        )
        # A replay starts a trace of its own (linked); otherwise the publish is the parent.
        parent = otel_context.Context() if replayed or not creation_span.is_valid else creation
        return self.tracer.start_span(
            f"process {handling.subscriber}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def middleware(self, handling: Handling, call_next: Callable[[], object]) -> object:
        with self._processing(handling):
            return call_next()

    async def async_middleware(
        self, handling: Handling, call_next: Callable[[], Awaitable[object]]
    ) -> object:
        with self._processing(handling):
            return await call_next()

    @contextlib.contextmanager
    def _processing(self, handling: Handling) -> Iterator[None]:
        """The handler's span, current while it runs; what it raised is recorded on it."""
        span = self._start_process_span(handling)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        except BaseException as error:
            _record(span, error)
            raise
        finally:
            otel_context.detach(token)
            span.end()


def _carrier(headers: Mapping[str, Any]) -> dict[str, str]:
    return {key: _text(value) for key, value in headers.items() if _is_text(value)}


def _end_unconfirmed(span: Span) -> None:
    span.set_attribute("domain_event.confirmed", False)
    span.end()


def _record(span: Span, error: BaseException) -> None:
    if isinstance(error, Retry):
        # Asked to be called again later: not an error of the span (an event says so).
        span.add_event("retry", {RETRY_DELAY: error.delay})
        return
    span.record_exception(error)
    span.set_attribute(ERROR_TYPE, type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:500]))


def _is_text(value: object) -> bool:
    return isinstance(value, (str, bytes))


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: object) -> int:
    if isinstance(value, (int, str, bytes)):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0
