"""OpenTelemetry through the Django outbox: the handler continues the trace of the request
that wrote the row, through the relay (PostgreSQL, real broker)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pika
from django.db import transaction
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from testproject.shop.models import Order

from domain_event_broker import Subscriber
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent
from domain_event_broker.django.outbox import relay_outbox
from otel_support import named
from support import consume_until, delete_queues, get_all

MakeSubscriber = Callable[..., Subscriber]


def test_one_trace_from_the_request_through_the_relay_to_the_handler(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("app")
    subscriber = make_subscriber()
    subscriber.register(lambda event: None, name, [f"{name}.*"])
    spy = f"{name}-spy"
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.queue_declare(spy, durable=True)  # 4.3 refuses transient queues
        channel.queue_bind(spy, "domain-events", routing_key=f"{name}.*")
    try:
        with tracer.start_as_current_span("POST /orders") as request, transaction.atomic():
            Order.objects.create(reference="T-1")
            event = publish_on_commit(f"{name}.placed", {"n": 1}, outbox=True)
        row = OutboxEvent.objects.get()
        assert row.headers is not None and "traceparent" in json.loads(row.headers)

        assert relay_outbox(once=True).relayed == 1
        ((_method, properties, body),) = get_all(broker_url, spy)
        consume_until(subscriber, lambda: len(named(exporter, "process")) == 1, settle=0.1)
    finally:
        delete_queues(broker_url, spy)

    assert body == row.payload.encode("utf-8")
    assert properties.headers == json.loads(row.headers)  # one trace context: the writer's
    (create,) = named(exporter, "create")
    (publish,) = named(exporter, "publish")
    (process,) = named(exporter, "process")
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in (create, publish, process)} == {trace_id}
    assert create.parent is not None
    assert create.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    assert publish.parent is not None and publish.parent.span_id == create.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == event.uuid_string
