"""OpenTelemetry through the SQLAlchemy outbox: one trace from the request that wrote the row,
through the relay, to the handler (PostgreSQL, real broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pika
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from domain_event_broker import Subscriber, otel
from domain_event_broker.aio.sqlalchemy import add_event as add_event_async
from domain_event_broker.sqlalchemy import add_event, outbox_table, relay_events
from otel_support import named
from sqlalchemy_tests.conftest import orders
from support import consume_until, get_all

MakeSubscriber = Callable[..., Subscriber]


def stored(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox_table.c.payload, outbox_table.c.headers).order_by(outbox_table.c.id)
        )
        return [(row.payload, row.headers) for row in rows]


def test_the_handler_continues_the_trace_of_the_request_that_wrote_the_row(
    pg_engine: Engine,
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("app")
    seen: list[tuple[bytes, dict[str, object]]] = []
    subscriber = make_subscriber()
    subscriber.register(lambda event: None, name, [f"{name}.*"])
    with (
        tracer.start_as_current_span("POST /orders") as request,
        Session(pg_engine) as session,
        session.begin(),
    ):
        session.execute(orders.insert().values(reference="T-1"))
        event = add_event(session, f"{name}.placed", {"n": 1, "note": "é"})
    ((payload, headers),) = stored(pg_engine)
    assert headers is not None and json.loads(headers)["traceparent"]
    (create,) = named(exporter, "create")
    assert create.kind is SpanKind.PRODUCER and create.attributes is not None
    assert create.attributes["messaging.operation.type"] == "create"
    assert create.parent is not None
    assert create.parent.span_id == request.get_span_context().span_id

    # The relay runs outside any span, with tracing on too (a relay process of its own).
    spy = f"{name}-spy"
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.queue_declare(spy, durable=True)  # 4.3 refuses transient queues
        channel.queue_bind(spy, "domain-events", routing_key=f"{name}.*")
    try:
        assert relay_events(pg_engine, broker_url, once=True).relayed == 1
        ((_method, properties, body),) = get_all(broker_url, spy)
        seen.append((body, dict(properties.headers or {})))
    finally:
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().queue_delete(spy)
    consume_until(subscriber, lambda: len(named(exporter, "process")) == 1, settle=0.1)

    # Stored payload byte for byte; on the wire exactly the stored trace context.
    body, wire_headers = seen[0]
    assert body == payload.encode("utf-8")
    assert wire_headers == json.loads(headers)
    (process,) = named(exporter, "process")
    (publish,) = named(exporter, "publish")
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in (create, publish, process)} == {trace_id}
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert publish.parent is not None and publish.parent.span_id == create.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == event.uuid_string
    assert publish.attributes["domain_event.confirmed"] is True


def test_a_row_written_without_tracing_gets_the_relays_own_trace(
    pg_engine: Engine,
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
) -> None:
    with Session(pg_engine) as session, session.begin():
        add_event(session, f"{name}.placed", {"n": 2})
    assert stored(pg_engine)[0][1] is None

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    try:
        subscriber = make_subscriber()
        subscriber.register(lambda event: None, name, [f"{name}.*"])
        assert relay_events(pg_engine, broker_url, once=True).relayed == 1
        consume_until(subscriber, lambda: len(named(exporter, "process")) == 1, settle=0.1)
        (publish,) = named(exporter, "publish")
        (process,) = named(exporter, "process")
        assert publish.parent is None
        assert process.parent is not None and process.parent.span_id == publish.context.span_id
    finally:
        otel.uninstrument()


def test_the_async_add_event_stores_the_trace_context_of_the_current_span(
    pg_engine: Engine,
    postgres_url: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("app")

    async def write() -> None:
        engine = create_async_engine(postgres_url)
        try:
            async with AsyncSession(engine) as session, session.begin():
                await add_event_async(session, "shop.order.placed", {"n": 3})
        finally:
            await engine.dispose()

    with tracer.start_as_current_span("POST /async-orders") as request:
        asyncio.run(write())
    ((_payload, headers),) = stored(pg_engine)
    assert headers is not None
    traceparent = json.loads(headers)["traceparent"]
    (create,) = named(exporter, "create")
    assert create.context.trace_id == request.get_span_context().trace_id
    assert traceparent.startswith(
        f"00-{create.context.trace_id:032x}-{create.context.span_id:016x}-"
    )
