"""Typed events on the real broker, through both drivers: versions, upcasts, 3.x publishers,
invalid bodies dead-lettered with the field named, nothing sent when a publish is invalid."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pika
import pytest

from domain_event_broker import DomainEvent, Publisher, Subscriber, publish_domain_event
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber
from domain_event_broker.contracts import (
    VERSION_HEADER,
    ContractViolation,
    TypedEvent,
    event_type,
    publish_event,
)
from domain_event_broker.topology import EXCEPTION_MESSAGE_HEADER, EXCEPTION_TYPE_HEADER
from drivers import Driver, Publishing
from support import get_all, queue_depth


@dataclass
class OrderPlacedV1:
    order_id: str
    total: float


@dataclass
class OrderPlacedV2:
    order_id: str
    total_cents: int
    currency: Literal["EUR", "USD"]


def order_types(routing_key: str) -> tuple[type[TypedEvent[Any]], type[TypedEvent[Any]]]:
    """The same event type at version 1 (an old publisher) and 2 (the subscriber's)."""
    v1 = event_type(routing_key, OrderPlacedV1, version=1)
    v2 = event_type(routing_key, OrderPlacedV2, version=2)

    @v2.upcast(from_version=1)
    def cents(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "order_id": data["order_id"],
            "total_cents": round(data["total"] * 100),
            "currency": "EUR",
        }

    return v1, v2


def test_v1_publisher_v2_subscriber_and_a_3x_publisher(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    broker_url: str,
    name: str,
) -> None:
    key = f"{name}.placed"
    v1, v2 = order_types(key)
    received: list[Any] = []
    driver = make_driver()
    driver.register(received.append, name, [v2])
    publisher = make_publishing()
    publisher.publish_event(v1(OrderPlacedV1("o-1", 12.5), domain_object_id="o-1"))
    publisher.publish_event(v2(OrderPlacedV2("o-2", 700, "USD")))
    # A 3.x service publishes the same event untyped: no version header, the current body.
    publish_domain_event(
        key,
        {"order_id": "o-3", "total_cents": 99, "currency": "EUR"},
        connection_settings=broker_url,
    )
    driver.run_until(lambda: len(received) == 3)
    assert all(isinstance(event, v2) for event in received)
    assert [event.data for event in received] == [
        OrderPlacedV2("o-1", 1250, "EUR"),
        OrderPlacedV2("o-2", 700, "USD"),
        OrderPlacedV2("o-3", 99, "EUR"),
    ]
    assert received[0].domain_object_id == "o-1"
    assert queue_depth(broker_url, name) == 0


def test_invalid_body_is_dead_lettered_naming_the_field(
    make_driver: Callable[..., Driver], broker_url: str, name: str
) -> None:
    key = f"{name}.placed"
    _, v2 = order_types(key)
    received: list[Any] = []
    driver = make_driver()
    driver.register(received.append, name, [v2], dead_letter=True, max_retries=3)
    publish_domain_event(
        key,
        {"order_id": "o-1", "total_cents": "12.50", "currency": "EUR"},
        connection_settings=broker_url,
    )
    publish_domain_event(
        key,
        {"order_id": "o-2", "total_cents": 5, "currency": "EUR"},
        connection_settings=broker_url,
    )
    driver.run_until(lambda: len(received) == 1 and queue_depth(broker_url, f"{name}-dl") == 1)
    assert [event.data.order_id for event in received] == ["o-2"]
    [(_, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert DomainEvent.from_json(body).data["order_id"] == "o-1"
    assert (
        properties.headers[EXCEPTION_TYPE_HEADER]
        == "domain_event_broker.contracts.ContractViolation"
    )
    reason = properties.headers[EXCEPTION_MESSAGE_HEADER]
    assert "data.total_cents" in reason and "expected an integer" in reason
    assert queue_depth(broker_url, name) == 0


@contextlib.contextmanager
def sink(channel: Any, name: str, key: str) -> Iterator[Callable[[], list[tuple[str, Any]]]]:
    """A durable queue bound for ``key``, deleted afterwards; yields a function that takes
    (order id, version header) of every event in it."""
    channel.exchange_declare("domain-events", "topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, "domain-events", key)

    def take() -> list[tuple[str, Any]]:
        taken = []
        while True:
            method, properties, body = channel.basic_get(name, auto_ack=True)
            if method is None:
                return taken
            order_id = DomainEvent.from_json(body).data["order_id"]
            taken.append((order_id, properties.headers[VERSION_HEADER]))

    try:
        yield take
    finally:
        channel.queue_delete(name)


def test_invalid_publish_sends_nothing_and_names_the_field(
    make_publishing: Callable[..., Publishing], broker_url: str, channel: Any, name: str
) -> None:
    key = f"{name}.placed"
    _, v2 = order_types(key)
    with sink(channel, name, key) as take:
        publisher = make_publishing()
        with pytest.raises(ContractViolation) as raised:
            publisher.publish_event(v2(OrderPlacedV2("o-1", 10, "GBP")))  # type: ignore[arg-type]
        assert raised.value.field == "data.currency"
        assert isinstance(raised.value, ValueError)
        with pytest.raises(ContractViolation, match=r"data\.order_id"):
            publish_event(v2(OrderPlacedV2(None, 10, "EUR")), broker_url)  # type: ignore[arg-type]
        publisher.publish_event(v2(OrderPlacedV2("o-2", 10, "EUR")))
        publish_event(v2(OrderPlacedV2("o-3", 10, "EUR")), broker_url)
        publisher.publish_batch([v2(OrderPlacedV2("o-4", 10, "EUR"))])
        assert take() == [("o-2", 2), ("o-3", 2), ("o-4", 2)]


def test_publish_many_carries_the_version_header_on_both_drivers(
    broker_url: str, channel: Any, name: str
) -> None:
    key = f"{name}.placed"
    _, v2 = order_types(key)

    async def publish_many_async() -> None:
        async with AsyncPublisher(broker_url) as publisher:
            outcomes = await publisher.publish_many([v2(OrderPlacedV2("o-2", 2, "EUR"))])
            assert all(outcome.confirmed for outcome in outcomes)

    with sink(channel, name, key) as take:
        with Publisher(broker_url) as publisher:
            publisher.publish_many([v2(OrderPlacedV2("o-1", 1, "EUR"))])
            with pytest.raises(ContractViolation, match=r"data\.total_cents"):
                publisher.publish_many(
                    [v2(OrderPlacedV2("o-9", 1, "EUR")), v2(OrderPlacedV2("o-9", 1.5, "EUR"))]
                )
        asyncio.run(publish_many_async())
        assert take() == [("o-1", 2), ("o-2", 2)]


#: For annotations: a handler's annotation names a module-level event type.
AnnotatedOrder = event_type("contracts-test.annotated", OrderPlacedV2, version=2)


def test_annotated_handlers_get_the_typed_event(
    make_subscriber: Callable[..., Subscriber], broker_url: str, name: str
) -> None:
    """``def handle(event: OrderPlaced)``: no binding keys needed, sync and asyncio."""
    got: list[Any] = []

    def handle(event: AnnotatedOrder) -> None:  # type: ignore[valid-type]
        got.append(("sync", event.data))

    async def handle_async(event: AnnotatedOrder) -> None:  # type: ignore[valid-type]
        got.append(("async", event.data))

    subscriber = make_subscriber()
    subscriber.register(handle, name)
    async_subscriber = AsyncSubscriber(broker_url, handle_signals=False)
    async_subscriber.register(handle_async, f"{name}-aio")
    assert async_subscriber.registrations[0].topology.binding_keys == ("contracts-test.annotated",)

    async def run() -> None:
        await async_subscriber.declare()
        publish_event(AnnotatedOrder(OrderPlacedV2("o-1", 1, "EUR")), broker_url)
        task = asyncio.create_task(async_subscriber.run())
        for _ in range(200):
            if any(kind == "async" for kind, _ in got):
                break
            await asyncio.sleep(0.05)
        await async_subscriber.stop()
        await task

    try:
        asyncio.run(run())
        subscriber.start_consuming(timeout=1.0)
    finally:
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().queue_delete(f"{name}-aio")
    assert sorted(got, key=lambda item: item[0]) == [
        ("async", OrderPlacedV2("o-1", 1, "EUR")),
        ("sync", OrderPlacedV2("o-1", 1, "EUR")),
    ]
