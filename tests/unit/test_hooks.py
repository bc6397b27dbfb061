"""Handler middleware (sync and asyncio), header injectors and Prometheus escaping: no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from domain_event_broker import DomainEvent, otel
from domain_event_broker.observability import (
    Handling,
    Metrics,
    Occurrence,
    add_header_injector,
    add_middleware,
    call_async_handler,
    call_handler,
    outgoing_headers,
)

EVENT = DomainEvent("user.registered", {"id": 1})


@pytest.fixture
def removers() -> Iterator[list[Callable[[], None]]]:
    added: list[Callable[[], None]] = []
    yield added
    for remove in added:
        remove()


def test_middlewares_wrap_the_handler_first_added_outermost(
    removers: list[Callable[[], None]],
) -> None:
    calls: list[str] = []

    def outer(handling: Handling, call_next: Callable[[], object]) -> object:
        calls.append(f"outer before {handling.subscriber}")
        result = call_next()
        calls.append(f"outer after {result}")
        return result

    def inner(handling: Handling, call_next: Callable[[], object]) -> object:
        calls.append("inner before")
        try:
            return call_next()
        except ValueError as error:
            calls.append(f"inner on error {error}")
            raise

    removers += [add_middleware(outer), add_middleware(inner)]

    def handler(event: DomainEvent) -> str:
        calls.append(f"handler {event.routing_key}")
        return "done"

    assert call_handler(handler, Handling("mailer", EVENT)) == "done"
    assert calls == [
        "outer before mailer",
        "inner before",
        "handler user.registered",
        "outer after done",
    ]

    def failing(_event: DomainEvent) -> None:
        raise ValueError("bug")

    calls.clear()
    with pytest.raises(ValueError, match="bug"):
        call_handler(failing, Handling("mailer", EVENT))
    assert calls == ["outer before mailer", "inner before", "inner on error bug"]

    for remove in removers:
        remove()
    calls.clear()
    assert call_handler(handler, Handling("mailer", EVENT)) == "done"
    assert calls == ["handler user.registered"]


def test_async_middlewares_wrap_async_handlers_and_sync_ones_do_not(
    removers: list[Callable[[], None]],
) -> None:
    calls: list[str] = []

    def sync_middleware(handling: Handling, call_next: Callable[[], object]) -> object:
        calls.append("sync")
        return call_next()

    async def first(handling: Handling, call_next: Callable[[], Awaitable[object]]) -> object:
        calls.append("first before")
        result = await call_next()
        calls.append("first after")
        return result

    async def second(handling: Handling, call_next: Callable[[], Awaitable[object]]) -> object:
        calls.append(f"second {handling.event.retries}")
        return await call_next()

    removers += [add_middleware(sync_middleware), add_middleware(first), add_middleware(second)]

    async def handler(event: DomainEvent) -> str:
        await asyncio.sleep(0)
        calls.append("async handler")
        return "ok"

    assert asyncio.run(call_async_handler(handler, Handling("mailer", EVENT))) == "ok"
    assert calls == ["first before", "second 0", "async handler", "first after"]
    calls.clear()
    # a plain function handler through the asyncio path: its result is returned as is
    assert asyncio.run(call_async_handler(lambda event: 7, Handling("mailer", EVENT))) == 7
    calls.clear()
    assert call_handler(lambda event: 8, Handling("mailer", EVENT)) == 8
    assert calls == ["sync"]


def test_a_failing_injector_is_logged_and_others_still_add_headers(
    removers: list[Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    assert outgoing_headers("user.registered", "e1") is None

    def broken(routing_key: str, message_id: str | None) -> dict[str, str]:
        raise RuntimeError("injector bug")

    removers += [
        add_header_injector(broken),
        add_header_injector(lambda key, message_id: {"x-seen": f"{key}/{message_id}"}),
    ]
    assert outgoing_headers("user.registered", "e1") == {"x-seen": "user.registered/e1"}
    assert "injector bug" in caplog.text


def test_otel_async_middleware_continues_the_publish_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    try:
        with provider.get_tracer("app").start_as_current_span("request"):
            headers = outgoing_headers("user.registered", EVENT.uuid_string)
        assert headers is not None and "traceparent" in headers

        async def handler(event: DomainEvent) -> None:
            assert trace.get_current_span().get_span_context().is_valid

        asyncio.run(call_async_handler(handler, Handling("mailer", EVENT, headers)))
    finally:
        otel.uninstrument()  # ends the publish span that never got a confirm
    spans = {span.name: span for span in exporter.get_finished_spans()}
    process, publish = spans["process mailer"], spans["publish domain-events"]
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["domain_event.confirmed"] is False
    context = propagate.extract(headers)
    assert trace.get_current_span(context).get_span_context().span_id == publish.context.span_id


label_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@given(routing_key=label_text, subscriber=label_text)
def test_prometheus_text_escapes_every_label_value(routing_key: str, subscriber: str) -> None:
    metrics = Metrics()
    metrics(Occurrence("handled", routing_key, "e1", subscriber=subscriber, seconds=0.5))
    families = list(text_string_to_metric_families(metrics.prometheus_text()))
    assert [family.name for family in families] == [
        "domain_events",
        "domain_event_handler_seconds",
    ]
    (handled,) = families[0].samples
    assert handled.labels == {
        "kind": "handled",
        "subscriber": subscriber,
        "routing_key": routing_key,
    }
    (seconds,) = families[1].samples
    assert seconds.labels == {"subscriber": subscriber} and seconds.value == 0.5
