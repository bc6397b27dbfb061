"""Code and test suites written for 3.x run unchanged.

Written from 3.x's public API and documented behaviour: the library is used
only the way 3.x code and its users' tests use it (the default broker set in
``settings.BROKER``, ``Subscriber()``, ``start_consuming(timeout=...)``, the
transport's ``channel``, ``unittest.mock.patch`` on the names 3.x code
patches). The broker is looked at with plain pika, as 3.x's test helpers did.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pika
import pika.exceptions
import pytest

from domain_event_broker import (
    DISCARD,
    LEAVE,
    RETRY,
    DomainEvent,
    Publisher,
    Subscriber,
    publish_domain_event,
    replay_all,
    replay_event,
    settings,
)
from domain_event_broker import transport as transport_module
from domain_event_broker.transport import Transport, requires_broker


@pytest.fixture(autouse=True)
def default_broker(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """3.x projects point ``settings.BROKER`` at their broker; here the test vhost."""
    monkeypatch.setattr(settings, "BROKER", broker_url)
    return broker_url


@pytest.fixture
def key() -> str:
    """A routing-key prefix no other test uses."""
    return f"compat{uuid.uuid4().hex[:8]}"


# Plain pika, as 3.x's tests/helpers.py --------------------------------------------
def get_queue_size(broker_url: str, name: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        return int(connection.channel().queue_declare(name, passive=True).method.message_count)


def check_queue_exists(broker_url: str, name: str) -> bool:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        try:
            connection.channel().queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            assert error.reply_code == 404
            return False
        return True


def get_message_from_queue(broker_url: str, name: str) -> tuple[Any, bytes | None]:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        method, header, body = channel.basic_get(name)
        if method is None:
            return None, None
        channel.basic_ack(method.delivery_tag)
        return header, body


def delete_subscriber(broker_url: str, name: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in (name, f"{name}-dl"):
            channel.queue_delete(queue)
        for exchange in (f"{name}-dlx", f"{name}-retry"):
            channel.exchange_delete(exchange)


def raise_error(event: DomainEvent) -> None:
    raise RuntimeError("Unexpected error")


def consume_until_dead_lettered(subscriber: Subscriber, broker_url: str, name: str, n: int) -> None:
    # 3.x's fixtures consumed with timeout=1.0 once; a shared machine may need longer.
    for _ in range(20):
        subscriber.start_consuming(timeout=1.0)
        if get_queue_size(broker_url, f"{name}-dl") == n:
            return
    raise AssertionError(f"{n} events were not dead-lettered in time")


# The transport surface ------------------------------------------------------------
def test_the_3x_transport_names_import_and_publisher_and_subscriber_are_transports() -> None:
    assert issubclass(transport_module.Publisher, Transport)
    assert issubclass(transport_module.Subscriber, Transport)
    assert transport_module.Publisher is Publisher
    assert transport_module.Subscriber is Subscriber
    assert transport_module.publish_domain_event is publish_domain_event
    assert callable(requires_broker)


def test_subscriber_channel_deletes_queues_as_3x_test_fixtures_do(broker_url: str) -> None:
    name = f"compat-delete-{uuid.uuid4().hex[:8]}"
    subscriber = Subscriber()
    try:
        subscriber.register(raise_error, name, ["compat.delete"], dead_letter=True)
        assert check_queue_exists(broker_url, name)
        transport = Subscriber()
        transport.channel.queue_delete(queue=name)
        transport.channel.queue_delete(queue=f"{name}-dl")
        assert isinstance(transport.connection, pika.BlockingConnection)
        assert not check_queue_exists(broker_url, name)
        assert not check_queue_exists(broker_url, f"{name}-dl")
        transport.disconnect()
    finally:
        subscriber.disconnect()
        delete_subscriber(broker_url, name)


def test_bind_routing_keys_and_transport_basic_get_read_a_published_event(
    broker_url: str, key: str
) -> None:
    name = f"{key}-raw"
    subscriber = Subscriber()
    try:
        subscriber.channel.queue_declare(queue=name, durable=True)
        subscriber.bind_routing_keys("domain-events", name, [f"{key}.user.*", f"{key}.order.#"])
        sent = publish_domain_event(f"{key}.user.registered", {"user_id": 7})
        publish_domain_event(f"{key}.order.x.y", {})
        publish_domain_event(f"{key}.other", {})
        transport = Transport(broker_url)
        method, header, body = transport.channel.basic_get(name)
        assert method is not None and method.routing_key == f"{key}.user.registered"
        assert DomainEvent.from_json(body) == sent
        assert header.delivery_mode == 2
        transport.channel.basic_ack(method.delivery_tag)
        transport.disconnect()
        assert get_queue_size(broker_url, name) == 1  # the order event; not the other one
    finally:
        subscriber.disconnect()
        delete_subscriber(broker_url, name)


def test_disconnect_closes_the_transport_connection_and_connect_opens_it_again(
    broker_url: str,
) -> None:
    for transport in (Transport(broker_url), Publisher(), Subscriber()):
        connection = transport.connection
        assert connection is not None and connection.is_open
        transport.disconnect()
        assert connection.is_closed, f"{type(transport).__name__}.disconnect() left it open"
        transport.connect()
        assert transport.connection is not None and transport.connection.is_open
        assert transport.channel is not None and transport.channel.is_open
        transport.disconnect()


def test_3x_test_queues_publish_to_another_exchange(broker_url: str, key: str) -> None:
    exchange = f"{key}-exchange"
    publisher = transport_module.Publisher(exchange=exchange)
    try:
        publisher.publish("test message", "x.y")
        publisher.disconnect()
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().exchange_declare(exchange, passive=True)  # it exists
    finally:
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().exchange_delete(exchange)


class Store(Transport):
    @requires_broker
    def purge(self, queue: str) -> str:
        assert self.channel is not None
        self.channel.queue_purge(queue)
        return f"purged {queue}"


def test_requires_broker_makes_a_method_a_logged_no_op_without_broker(
    broker_url: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="domain_event_broker"):
        assert Store(connection_settings=None).purge("anything") is None
    assert "No broker configured: Store.purge() is deactivated." in caplog.messages
    store = Store(broker_url)
    store.channel.queue_declare(queue=key, durable=True)  # 4.3 refuses transient queues
    try:
        assert store.purge(key) == f"purged {key}"
    finally:
        store.channel.queue_delete(queue=key)
        store.disconnect()


def test_dummy_mode_without_broker(broker_url: str, key: str) -> None:
    # 3.x's test_dummy_mode, plus the transport attributes (None without a broker).
    received: list[DomainEvent] = []
    name = f"{key}-dummy"
    subscriber = Subscriber(connection_settings=None)
    subscriber.register(received.append, name, [f"{key}.publish-dummy"])
    event = publish_domain_event(f"{key}.publish-dummy", {}, connection_settings=None)
    subscriber.start_consuming(timeout=1.0)
    assert isinstance(event, DomainEvent) and received == []
    assert not check_queue_exists(broker_url, name)
    assert subscriber.connection is None and subscriber.channel is None
    assert subscriber.connect() is None
    assert subscriber.bind_routing_keys("domain-events", name, ["a.b"]) is None
    subscriber.disconnect()
    publisher = Publisher(None)
    assert publisher.publish("{}", "a.b") is None and publisher.channel is None
    publisher.disconnect()


def test_invalid_json_is_survived(broker_url: str, key: str) -> None:
    # 3.x's test_invalid_json: Publisher(settings.DEFAULT), a body that is no event.
    name = f"{key}-invalid-json"
    handled: list[DomainEvent] = []
    subscriber = Subscriber()
    try:
        subscriber.register(handled.append, name, [f"{key}.#"])
        publisher = Publisher(settings.DEFAULT)
        publisher.publish("iamnotvalidjson[]", f"{key}.foo")
        publisher.disconnect()
        subscriber.start_consuming(timeout=1.0)
        assert handled == []
        assert get_queue_size(broker_url, name) == 0
    finally:
        subscriber.disconnect()
        delete_subscriber(broker_url, name)


# Test suites patch Publisher.publish ----------------------------------------------
@pytest.mark.parametrize("connection_settings", ["", None])
def test_patching_publisher_publish_intercepts_publish_domain_event(
    connection_settings: str | None,
) -> None:
    with patch("domain_event_broker.transport.Publisher.publish") as publish:
        event = publish_domain_event("x.y", {"a": 1}, "7", connection_settings=connection_settings)
    publish.assert_called_once_with(json.dumps(event.event_data), "x.y")


# Replay: the counts 3.x returns ---------------------------------------------------
@pytest.fixture
def dead_letters(broker_url: str, key: str) -> Iterator[tuple[str, list[DomainEvent]]]:
    """3.x's ``dead_letter_message`` fixture, for three events."""
    name = f"{key}-replay"
    subscriber = Subscriber()
    subscriber.register(raise_error, name, [f"{key}.replay"], dead_letter=True)
    sent = [
        publish_domain_event(f"{key}.replay", {"message": n, "region": region})
        for n, region in enumerate(["eu", "us", "eu"])
    ]
    consume_until_dead_lettered(subscriber, broker_url, name, 3)
    yield name, sent
    subscriber.disconnect()
    transport = Subscriber()
    transport.channel.queue_delete(queue=name)
    transport.channel.queue_delete(queue=f"{name}-dl")
    transport.disconnect()
    delete_subscriber(broker_url, name)


def take(broker_url: str, queue: str) -> list[DomainEvent]:
    events = []
    while True:
        _, body = get_message_from_queue(broker_url, queue)
        if body is None:
            return events
        events.append(DomainEvent.from_json(body))


def leave(**kwargs: Any) -> str:
    return LEAVE


def discard(**kwargs: Any) -> str:
    return DISCARD


def test_replay_event_returns_the_count_beside_the_event_taken(
    broker_url: str, dead_letters: tuple[str, list[DomainEvent]]
) -> None:
    name, sent = dead_letters
    assert replay_event(name, message_callback=leave) == 2
    assert get_queue_size(broker_url, f"{name}-dl") == 3
    assert replay_event(name) == 2
    assert replay_event(name, message_callback=discard) == 1
    assert replay_event(name) == 0
    assert replay_event(name) == 0  # empty
    assert take(broker_url, name) == [sent[0], sent[2]]


def test_leave_on_the_only_event_returns_0_and_keeps_it(broker_url: str, key: str) -> None:
    # 3.x's test_leave.
    name = f"{key}-leave"
    subscriber = Subscriber()
    try:
        subscriber.register(raise_error, name, [f"{key}.replay"], dead_letter=True)
        sent = publish_domain_event(f"{key}.replay", {"message": "only"})
        consume_until_dead_lettered(subscriber, broker_url, name, 1)
        assert replay_event(name, message_callback=leave) == 0
        assert get_queue_size(broker_url, f"{name}-dl") == 1
        assert get_queue_size(broker_url, name) == 0
        assert take(broker_url, f"{name}-dl") == [sent]
    finally:
        subscriber.disconnect()
        delete_subscriber(broker_url, name)


def test_replay_all_returns_3x_count_and_offers_each_event_once(
    broker_url: str, dead_letters: tuple[str, list[DomainEvent]]
) -> None:
    name, sent = dead_letters
    seen: list[str] = []

    def look(frame: Any, header: Any, body: bytes) -> str:
        seen.append(DomainEvent.from_json(body).uuid_string)
        return LEAVE

    assert replay_all(name, look) == 2
    assert seen == [event.uuid_string for event in sent]
    assert get_queue_size(broker_url, f"{name}-dl") == 3
    assert replay_all(name) == 0
    assert take(broker_url, name) == sent


def test_readme_replay_filter_on_body_bytes_matches(
    broker_url: str, dead_letters: tuple[str, list[DomainEvent]]
) -> None:
    name, sent = dead_letters

    def only_eu(frame: Any, header: Any, body: bytes) -> str:  # the example of docs/retries.md
        return RETRY if b'"region": "eu"' in body else LEAVE

    readme = (Path(__file__).resolve().parents[1] / "docs" / "retries.md").read_text()
    assert """return RETRY if b'"region": "eu"' in body else LEAVE""" in readme

    replay_all(name, only_eu)
    assert take(broker_url, name) == [sent[0], sent[2]]
    assert take(broker_url, f"{name}-dl") == [sent[1]]


# Wire bytes ------------------------------------------------------------------------
def test_body_is_json_dumps_of_event_data_as_3x_writes_it(broker_url: str, key: str) -> None:
    name = f"{key}-bytes"
    transport = Transport(broker_url)
    channel = transport.channel
    assert channel is not None
    try:
        channel.queue_declare(queue=name, durable=True)  # 4.3 refuses transient queues
        channel.queue_bind(queue=name, exchange="domain-events", routing_key=f"{key}.#")
        event = publish_domain_event(f"{key}.user.registered", {"region": "eu", "n": [1, 2]}, "7")
        _, body = get_message_from_queue(broker_url, name)
        assert body == json.dumps(event.event_data).encode()
        assert b'"region": "eu"' in body
        assert body.startswith(b'{"routing_key": "')
    finally:
        channel.queue_delete(queue=name)
        transport.disconnect()
