"""Hooks for metrics and tracing: one callback for each thing that happens to an event.

>>> from domain_event_broker.observability import Metrics, add_listener
>>> metrics = Metrics()
>>> remove = add_listener(metrics)
>>> notify(Occurrence("handled", "user.registered", "e1", subscriber="mailer", seconds=0.02))
>>> metrics.count("handled", subscriber="mailer")
1
>>> remove()

What is reported (``Occurrence.kind``):

- ``published``: the broker confirmed an event (``subscriber`` is ``None``;
  ``seconds``, when given, is the time from the hand-over to the confirm);
- ``handled``: a handler returned; ``seconds`` is how long it ran;
- ``retried``: a handler raised :class:`Retry` and a delayed copy was scheduled;
- ``dead_lettered``: the event went to the dead-letter queue;
- ``dropped``: it failed and the subscriber keeps no dead letters;
- ``publish_failed``: ``publish_on_commit`` could not publish an event (after
  the commit, or at once outside a transaction); ``event_id`` is ``None``
  unless the caller gave ``uuid_string``;
- ``outbox_refused``: the broker refused an outbox row's event (it backs off);
- ``outbox_parked``: an outbox row was refused too often and is parked.

Listeners run on the thread where it happened (a publisher's caller, a
subscriber's worker) and must be quick; an exception in one is logged, never
raised into the library.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .events import DomainEvent

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


def _added(hooks: str, hook: object) -> Callable[[], None]:
    """Add ``hook`` to the module's tuple named ``hooks``; return a function that removes it.

    The tuples are replaced, never changed in place, so that the hot paths read
    them without a lock; only writers take it.
    """
    namespace = globals()
    with _lock:
        namespace[hooks] = (*namespace[hooks], hook)

    def remove() -> None:
        with _lock:
            namespace[hooks] = tuple(known for known in namespace[hooks] if known is not hook)

    return remove


def add_listener(listener: Listener) -> Callable[[], None]:
    """Call ``listener(occurrence)`` for every occurrence; returns a function that removes it."""
    return _added("_listeners", listener)


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


@dataclass(frozen=True, slots=True)  # slots: built for every delivery, twice as fast
class Handling:
    """One call of a handler, as a middleware sees it."""

    subscriber: str
    event: DomainEvent
    #: The delivery's AMQP headers (where a trace context travels).
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: The exchange the subscriber's queue is bound to.
    exchange: str = "domain-events"


#: ``middleware(handling, call_next)``: run code before and after ``call_next()``
#: (which calls the handler, or the next middleware), or around its exception.
Middleware = Callable[[Handling, Callable[[], object]], object]
#: ``async def middleware(handling, call_next)``: the same for asyncio handlers;
#: ``await call_next()`` runs the handler (or the next middleware).
AsyncMiddleware = Callable[[Handling, Callable[[], Awaitable[object]]], Awaitable[object]]
_middlewares: tuple[Middleware, ...] = ()
_async_middlewares: tuple[AsyncMiddleware, ...] = ()


def add_middleware(middleware: Middleware | AsyncMiddleware) -> Callable[[], None]:
    """Wrap every handler call in ``middleware``; returns a function that removes it.

    A plain function wraps the handlers of the (threaded) :class:`Subscriber`;
    an ``async def`` function wraps those of asyncio consumers, which await
    :func:`call_async_handler`. To cover both, add one of each. Middlewares run
    on the thread (or task) that runs the handler, the first added outermost:
    code before ``call_next()`` is the "before" hook, code after it the "after"
    hook, an ``except`` around it the "on error" hook (re-raise, or the event
    counts as handled).

    >>> def log_event_id(handling, call_next):
    ...     with logging_context(event_id=handling.event.uuid_string):  # doctest: +SKIP
    ...         return call_next()
    """
    is_async = inspect.iscoroutinefunction(middleware) or inspect.iscoroutinefunction(
        getattr(middleware, "__call__", None)  # noqa: B004 (an object with async __call__)
    )
    return _added("_async_middlewares" if is_async else "_middlewares", middleware)


def has_middleware() -> bool:
    """Whether any middleware wraps handler calls (consumers skip the wrapping otherwise)."""
    return bool(_middlewares)


def call_handler(handler: Callable[[DomainEvent], object], handling: Handling) -> object:
    """Call ``handler(handling.event)`` inside every middleware, the first added outermost."""
    middlewares = _middlewares
    if not middlewares:
        return handler(handling.event)
    call: Callable[[], object] = functools.partial(handler, handling.event)
    for middleware in reversed(middlewares):
        call = functools.partial(middleware, handling, call)
    return call()


async def call_async_handler(
    handler: Callable[[DomainEvent], object], handling: Handling
) -> object:
    """Await ``handler(handling.event)`` inside every async middleware, the first added outermost.

    ``handler`` may also be a plain function; its result is awaited when it is awaitable.
    """

    async def innermost() -> object:
        result = handler(handling.event)
        if inspect.isawaitable(result):
            return await result
        return result

    call: Callable[[], Awaitable[object]] = innermost
    for middleware in reversed(_async_middlewares):
        call = functools.partial(middleware, handling, call)
    return await call()


#: ``injector(routing_key, message_id)`` returns headers to add to an outgoing
#: message (a trace context), called on the publishing caller's thread.
HeaderInjector = Callable[[str, "str | None"], "Mapping[str, Any] | None"]
_injectors: tuple[HeaderInjector, ...] = ()


def add_header_injector(injector: HeaderInjector) -> Callable[[], None]:
    """Add headers from ``injector`` to every published message; returns a remover."""
    return _added("_injectors", injector)


#: True while :func:`outbox_headers` runs: the message is written now and published later.
_for_outbox: ContextVar[bool] = ContextVar("domain_event_for_outbox", default=False)


#: The message's own stored headers while injectors run for an outbox row's publish.
_stored: ContextVar[Mapping[str, Any] | None] = ContextVar("domain_event_stored", default=None)


def stored_headers() -> Mapping[str, Any] | None:
    """While injectors run for the publish of an outbox row: the headers stored with it.

    What an injector returns then is not sent (the row keeps the context taken
    when it was written); a tracer can start its publish span in that context.
    ``None`` for every other publish.
    """
    return _stored.get()


def publishing_later() -> bool:
    """Whether the headers asked for now go into an outbox row (the relay publishes it later).

    Injectors may use it: the OpenTelemetry one starts a ``create`` span that
    ends at once instead of a ``send`` span waiting for the broker's confirm,
    which would come in another process.
    """
    return _for_outbox.get()


def outbox_headers(routing_key: str, message_id: str | None) -> dict[str, Any] | None:
    """:func:`outgoing_headers` for an event written to the outbox now and published later.

    They are stored with the row, and the relay publishes the row with them and
    calls no injector of its own, so the publish continues the trace of the
    request that wrote the row.
    """
    if not _injectors:
        return None
    token = _for_outbox.set(True)
    try:
        return outgoing_headers(routing_key, message_id)
    finally:
        _for_outbox.reset(token)


def message_headers(
    routing_key: str,
    message_id: str | None,
    headers: Mapping[str, Any] | None,
    injected: bool = False,
) -> dict[str, Any] | None:
    """The AMQP headers of an outgoing message: the injectors' and its own (its own win).

    ``injected``: ``headers`` already hold what injectors added when the event
    was written (an outbox row); no injector runs again, so the message carries
    one trace context, the writer's.
    """
    if injected:
        stored = dict(headers) if headers else None
        if _injectors and stored:
            # Injectors still see the publish (a tracer records a publish span in the
            # stored trace), but what they return is not added.
            token = _stored.set(stored)
            try:
                outgoing_headers(routing_key, message_id)
            finally:
                _stored.reset(token)
        return stored
    added = outgoing_headers(routing_key, message_id)
    if headers:
        return {**(added or {}), **headers}
    return added


def outgoing_headers(routing_key: str, message_id: str | None) -> dict[str, Any] | None:
    """Headers every injector adds to a message now (``None`` when there are none)."""
    if not _injectors:
        return None
    headers: dict[str, Any] = {}
    for injector in _injectors:
        try:
            added = injector(routing_key, message_id)
        except Exception:
            log.exception("header injector %r failed on %s", injector, routing_key)
            continue
        if added:
            headers.update(added)
    return headers or None


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
        """The counters in the Prometheus text exposition format (label values escaped)."""
        lines = [
            "# HELP domain_events_total Domain events by what happened to them.",
            "# TYPE domain_events_total counter",
        ]
        with self._lock:
            for (kind, subscriber, routing_key), number in sorted(self._counts.items()):
                labels = (
                    f'kind="{escape_label_value(kind)}",'
                    f'subscriber="{escape_label_value(subscriber)}",'
                    f'routing_key="{escape_label_value(routing_key)}"'
                )
                lines.append(f"domain_events_total{{{labels}}} {number}")
            lines += [
                "# HELP domain_event_handler_seconds_total Seconds spent in handlers.",
                "# TYPE domain_event_handler_seconds_total counter",
            ]
            for subscriber, seconds in sorted(self._handler_seconds.items()):
                label = escape_label_value(subscriber)
                lines.append(
                    f'domain_event_handler_seconds_total{{subscriber="{label}"}} {seconds:.6f}'
                )
        return "\n".join(lines) + "\n"


def escape_label_value(value: str) -> str:
    r"""``value`` as a label value of the Prometheus text format: ``\``, ``"`` and newline escaped.

    >>> print(escape_label_value('say "hi"\nfake_metric 1'))
    say \"hi\"\nfake_metric 1
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
