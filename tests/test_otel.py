"""OpenTelemetry: one trace from the publishing request to every handler run (real broker)."""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv
from opentelemetry.trace import SpanKind, StatusCode

from domain_event_broker import DomainEvent, Retry, Subscriber, otel, publish_domain_event
from domain_event_broker.replay import replay_event
from otel_support import named
from support import consume_until, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def test_one_trace_runs_from_the_request_through_a_retry_to_the_handling_that_succeeds(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("app")
    inside: list[str] = []

    def handler(event: DomainEvent) -> None:
        with tracer.start_as_current_span("send mail"):  # the user's own span, inside ours
            inside.append(event.uuid_string or "")
        if event.retries == 0:
            raise Retry(0.1)

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.*"], max_retries=2)
    with tracer.start_as_current_span("POST /signup") as request:
        event = publish_domain_event(
            f"{name}.registered", {"id": 1}, connection_settings=broker_url
        )
    consume_until(subscriber, lambda: len(named(exporter, "process")) == 2, settle=0.2)

    (publish,) = named(exporter, "publish")
    first, second = sorted(named(exporter, "process"), key=lambda span: span.start_time or 0)
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in (publish, first, second)} == {trace_id}
    assert publish.kind is SpanKind.PRODUCER
    assert (
        publish.parent is not None and publish.parent.span_id == request.get_span_context().span_id
    )
    assert publish.attributes is not None
    assert publish.attributes[semconv.MESSAGING_SYSTEM] == "rabbitmq"
    assert publish.attributes[semconv.MESSAGING_DESTINATION_NAME] == "domain-events"
    assert publish.attributes[semconv.MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY] == (
        f"{name}.registered"
    )
    assert publish.attributes[semconv.MESSAGING_MESSAGE_ID] == event.uuid_string
    assert publish.attributes[semconv.MESSAGING_OPERATION_TYPE] == "send"
    assert publish.attributes["domain_event.confirmed"] is True
    for run, retries in ((first, 0), (second, 1)):
        assert run.kind is SpanKind.CONSUMER
        assert run.parent is not None and run.parent.span_id == publish.context.span_id
        assert [link.context.span_id for link in run.links] == [publish.context.span_id]
        assert run.attributes is not None
        assert run.attributes[semconv.MESSAGING_OPERATION_TYPE] == "process"
        assert run.attributes[semconv.MESSAGING_DESTINATION_SUBSCRIPTION_NAME] == name
        assert run.attributes[semconv.MESSAGING_MESSAGE_ID] == event.uuid_string
        assert run.attributes["domain_event.retries"] == retries
    assert [e.name for e in first.events] == ["retry"]
    assert first.status.status_code is StatusCode.UNSET
    assert second.events == ()
    mails = named(exporter, "send mail")
    assert len(mails) == 2 == len(inside)
    assert {span.parent.span_id for span in mails if span.parent} == {
        first.context.span_id,
        second.context.span_id,
    }


def test_a_dead_letter_that_is_replayed_links_back_to_its_original_trace(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _provider, exporter = spans
    fixed = False

    def handler(event: DomainEvent) -> None:
        if not fixed:
            raise ValueError("bug")

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.*"], dead_letter=True)
    publish_domain_event(f"{name}.registered", {"id": 2}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1)
    (publish,) = named(exporter, "publish")
    (failed,) = named(exporter, "process")
    assert failed.context.trace_id == publish.context.trace_id
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "ValueError"
    assert [e.name for e in failed.events] == ["exception"]

    fixed = True
    assert replay_event(name, connection_settings=broker_url) == 0
    consume_until(subscriber, lambda: len(named(exporter, "process")) == 2)
    replayed = next(span for span in named(exporter, "process") if span is not failed)
    assert replayed.context.trace_id != publish.context.trace_id  # a trace of its own
    assert replayed.parent is None
    (link,) = replayed.links
    assert link.context.trace_id == publish.context.trace_id
    assert link.context.span_id == publish.context.span_id
    assert replayed.attributes is not None and replayed.attributes["domain_event.replayed"] == 1
    assert replayed.status.status_code is StatusCode.UNSET


def test_nothing_is_traced_after_uninstrument(
    broker_url: str, name: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _provider, exporter = spans
    otel.uninstrument()
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    time.sleep(0.05)
    assert exporter.get_finished_spans() == ()
