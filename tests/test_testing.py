"""The in-memory broker users put in their own tests."""

from __future__ import annotations

import time

import pytest

from domain_event_broker import (
    DomainEvent,
    EventNotSerializable,
    InvalidRoutingKey,
    Retry,
    publish_domain_event,
)
from domain_event_broker.testing import InMemoryBroker


def test_retries_run_on_a_virtual_clock() -> None:
    seen: list[tuple[int, float]] = []
    with InMemoryBroker() as broker:

        def slow_retry(event: DomainEvent) -> None:
            seen.append((event.retries, broker.clock))
            if event.retries == 0:
                raise Retry(3600)

        broker.register(slow_retry, "sync", ["user.*"], max_retries=1)
        publish_domain_event("user.registered", {})
        started = time.monotonic()
        broker.run()
    assert time.monotonic() - started < 1
    assert seen == [(0, 0.0), (1, 3600.0)]


def test_published_events_are_recorded_and_nothing_reaches_rabbitmq() -> None:
    with InMemoryBroker() as broker:
        # An unreachable URL: the event must not even try to go there.
        event = publish_domain_event(
            "user.registered", {"id": 1}, connection_settings="amqp://127.0.0.1:5999/%2F"
        )
    assert broker.published == [event]


def test_leaving_the_block_restores_publishing(broker_url: str) -> None:
    with InMemoryBroker():
        pass
    with pytest.raises(Exception, match="cannot reach RabbitMQ"):
        publish_domain_event("user.registered", {}, connection_settings="amqp://127.0.0.1:5999/%2F")


def test_bad_events_fail_as_they_would_against_rabbitmq() -> None:
    with InMemoryBroker():
        with pytest.raises(InvalidRoutingKey):
            publish_domain_event("user.*", {})
        with pytest.raises(EventNotSerializable):
            publish_domain_event("user.registered", {"x": object()})


def test_undelivered_events_can_be_inspected() -> None:
    with InMemoryBroker() as broker:
        broker.register(print, "printer", ["user.#"])
        sent = publish_domain_event("user.registered", {"id": 2})
        assert broker.waiting("printer") == [sent]
    with pytest.raises(ValueError, match="no dead-letter queue"):
        broker.dead_letters("printer")


def test_a_retry_loop_is_reported_not_hung() -> None:
    broker = InMemoryBroker()
    broker.register(lambda e: (_ for _ in ()).throw(Retry(1)), "loop", ["#"], max_retries=10**9)
    broker.publish(DomainEvent("a.b"))
    with pytest.raises(RuntimeError, match="retry loop"):
        broker.run(max_deliveries=100)
