"""Failures are kept, not lost: dead-letter queue with failure headers, bad bodies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pika
import pytest

from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from domain_event_broker.topology import TRACEBACK_HEADER
from support import consume_until, get_all, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def test_a_crashing_handler_dead_letters_the_event_with_failure_headers(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    calls: list[DomainEvent] = []

    def crash(event: DomainEvent) -> None:
        calls.append(event)
        raise KeyError("no such customer")

    subscriber = make_subscriber()
    subscriber.register(crash, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    sent = publish_domain_event(f"{name}.failed", {"id": 9}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, settle=0.2)
    assert len(calls) == 1, "any exception but Retry dead-letters at once"
    assert queue_depth(broker_url, name) == 0
    [(method, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert DomainEvent.from_json(body) == sent
    assert method.routing_key == f"{name}.failed"
    headers = properties.headers
    assert headers["x-domain-event-failed-subscriber"] == name
    assert headers["x-domain-event-exception-type"] == "KeyError"
    assert "no such customer" in headers["x-domain-event-exception-message"]
    failed_at = datetime.fromisoformat(headers["x-domain-event-failed-at"])
    assert abs((datetime.now(timezone.utc) - failed_at).total_seconds()) < 60
    assert properties.delivery_mode == 2


def test_a_crash_without_dead_letter_queue_drops_and_logs_the_event(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def crash(event: DomainEvent) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    subscriber = make_subscriber()
    subscriber.register(crash, name, [f"{name}.#"])
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        consume_until(subscriber, lambda: bool(calls), settle=0.3)
    assert calls == [1]
    assert queue_depth(broker_url, name) == 0
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sent.uuid_string in record.getMessage() and "boom" in record.getMessage()
    assert record.exc_info is not None, "the traceback is logged"


def test_a_body_that_is_not_an_event_goes_to_the_dead_letter_queue_and_consuming_goes_on(
    broker_url: str,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    name: str,
    make_subscriber: MakeSubscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []
    subscriber = make_subscriber()
    subscriber.register(
        lambda e: handled.append(e.routing_key), name, [f"{name}.#"], dead_letter=True
    )
    channel.basic_publish(
        "domain-events",
        f"{name}.garbage",
        b"this is not json",
        pika.BasicProperties(delivery_mode=2),
    )
    publish_domain_event(f"{name}.fine", {}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        consume_until(subscriber, lambda: bool(handled), settle=0.3)
    assert handled == [f"{name}.fine"]
    [(method, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert body == b"this is not json"
    assert method.routing_key == f"{name}.garbage"
    assert properties.headers["x-domain-event-exception-type"].endswith("InvalidEvent")
    assert any("not a domain event" in r.getMessage() for r in caplog.records)


def test_a_body_that_is_not_an_event_is_logged_when_there_is_no_dead_letter_queue(
    broker_url: str,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    name: str,
    make_subscriber: MakeSubscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: handled.append(e.routing_key), name, [f"{name}.#"])
    channel.basic_publish("domain-events", f"{name}.garbage", b"[1, 2, 3]")
    publish_domain_event(f"{name}.fine", {}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        consume_until(subscriber, lambda: bool(handled), settle=0.3)
    assert handled == [f"{name}.fine"]
    assert queue_depth(broker_url, name) == 0
    assert any(
        "not a domain event" in r.getMessage() and "dropped" in r.getMessage()
        for r in caplog.records
    )


def test_one_subscriber_failing_does_not_affect_another(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    healthy: list[DomainEvent] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, f"{name}-broken", [f"{name}.#"], dead_letter=True)
    subscriber.register(healthy.append, f"{name}-healthy", [f"{name}.#"], dead_letter=True)
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(
        subscriber,
        lambda: bool(healthy) and queue_depth(broker_url, f"{name}-broken-dl") == 1,
        settle=0.2,
    )
    assert healthy == [sent]
    assert queue_depth(broker_url, f"{name}-healthy-dl") == 0


def test_dead_letter_falls_back_to_the_queue_when_no_binding_matches(
    broker_url: str,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    name: str,
    make_subscriber: MakeSubscriber,
) -> None:
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, name, [f"{name}.a"], dead_letter=True)
    # An event arriving by a binding the dead-letter exchange does not have
    # (left over from an earlier set of binding keys, say).
    channel.queue_bind(name, "domain-events", routing_key=f"{name}.old")
    sent = publish_domain_event(f"{name}.old", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, settle=0.2)
    [(_, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert DomainEvent.from_json(body) == sent
    assert properties.headers["x-domain-event-routing-key"] == f"{name}.old"


def test_a_dead_letter_carries_where_the_handler_raised_on_both_drivers(
    broker_url: str, name: str, make_driver: Callable[..., Any]
) -> None:
    def charge_card(event: DomainEvent) -> None:
        raise LookupError(f"card of customer {event.data['customer']} expired")

    subscriber = make_driver()
    subscriber.register(charge_card, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.paid", {"customer": 7}, connection_settings=broker_url)
    subscriber.run_until(lambda: queue_depth(broker_url, f"{name}-dl") == 1)
    [(_, properties, _body)] = get_all(broker_url, f"{name}-dl")
    traceback = properties.headers[TRACEBACK_HEADER]
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert f'File "{__file__}", line ' in traceback
    assert traceback.endswith(", in charge_card\nLookupError: card of customer 7 expired")
