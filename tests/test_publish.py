"""Publishing: what arrives on the broker, connection reuse, confirms, clear errors."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from domain_event_broker import (
    BrokerUnavailable,
    DomainEvent,
    EventNotSerializable,
    EventTooLarge,
    InvalidRoutingKey,
    Publisher,
    PublishError,
    publish_domain_event,
    settings,
)
from domain_event_broker.publisher import shared_publisher
from drivers import Driver, Publishing
from outbox_support import lowered_max_message_size
from support import FreezingProxy, broker_at, delete_queues, get_all, queue_depth, rabbitmqctl


@pytest.fixture
def bound_queue(broker_url: str, name: str) -> Any:
    """A queue bound to the events exchange with ``<name>.#``, deleted afterwards."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    yield name
    delete_queues(broker_url, name)


def test_event_arrives_as_persistent_json_with_its_routing_key(
    broker_url: str, bound_queue: str
) -> None:
    event = publish_domain_event(
        f"{bound_queue}.registered",
        {"user_id": 7},
        domain_object_id="7",
        connection_settings=broker_url,
    )
    [(method, properties, body)] = get_all(broker_url, bound_queue)
    assert method.exchange == "domain-events"
    assert method.routing_key == f"{bound_queue}.registered"
    assert properties.delivery_mode == 2
    assert json.loads(body) == event.event_data
    assert DomainEvent.from_json(body) == event
    assert properties.message_id == event.uuid_string


def test_default_connection_settings_use_settings_broker(
    broker_url: str, bound_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "BROKER", broker_url)
    publish_domain_event(f"{bound_queue}.registered", {})
    assert len(get_all(broker_url, bound_queue)) == 1


def test_no_broker_builds_the_event_and_sends_nothing(broker_url: str, bound_queue: str) -> None:
    event = publish_domain_event(
        f"{bound_queue}.registered", {"a": 1}, uuid_string="fixed", connection_settings=None
    )
    assert (event.routing_key, event.data, event.uuid_string) == (
        f"{bound_queue}.registered",
        {"a": 1},
        "fixed",
    )
    assert get_all(broker_url, bound_queue) == []
    Publisher(None).publish("{}", "a.b")  # a no-op, not an error


def _publisher_connections(vhost: str) -> list[str]:
    out = rabbitmqctl("list_connections", "-q", "vhost", "client_properties")
    pid = f"pid={os.getpid()}"
    return [
        line
        for line in out.splitlines()
        if line.startswith(vhost + "\t")
        and f'"connection_name","domain-event-broker publisher {socket.gethostname()} {pid}"'
        in line
    ]


def test_one_connection_is_reused_by_every_publish_and_every_thread(
    broker_url: str, vhost: str, bound_queue: str
) -> None:
    errors: list[BaseException] = []

    def publish_some(thread: int) -> None:
        try:
            for number in range(50):
                publish_domain_event(
                    f"{bound_queue}.created",
                    {"thread": thread, "n": number},
                    connection_settings=broker_url,
                )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=publish_some, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    bodies = [json.loads(body)["data"] for _, _, body in get_all(broker_url, bound_queue)]
    assert sorted((d["thread"], d["n"]) for d in bodies) == [
        (t, n) for t in range(8) for n in range(50)
    ]
    assert len(_publisher_connections(vhost)) == 1


def test_a_forked_child_publishes_on_a_connection_of_its_own(
    broker_url: str, bound_queue: str
) -> None:
    publish_domain_event(f"{bound_queue}.parent", {"who": "parent"}, connection_settings=broker_url)
    parent_publisher = shared_publisher(broker_url)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            publish_domain_event(
                f"{bound_queue}.child", {"who": "child"}, connection_settings=broker_url
            )
            os._exit(0 if shared_publisher(broker_url) is not parent_publisher else 3)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    publish_domain_event(f"{bound_queue}.parent", {"who": "parent"}, connection_settings=broker_url)
    whos = sorted(
        json.loads(body)["data"]["who"] for _, _, body in get_all(broker_url, bound_queue)
    )
    assert whos == ["child", "parent", "parent"]


def test_publisher_class_sends_a_serialised_message(broker_url: str, bound_queue: str) -> None:
    publisher = Publisher(broker_url)
    event = DomainEvent(f"{bound_queue}.registered", {"x": 1})
    publisher.publish(event.to_json(), event.routing_key)
    publisher.publish(event.to_json().encode(), event.routing_key)
    publisher.disconnect()
    bodies = [body for _, _, body in get_all(broker_url, bound_queue)]
    assert [DomainEvent.from_json(body) for body in bodies] == [event, event]


def test_publish_many_confirms_every_event(broker_url: str, bound_queue: str) -> None:
    with Publisher(broker_url) as publisher:
        events = publisher.publish_many(
            DomainEvent(f"{bound_queue}.item", {"n": n}) for n in range(500)
        )
    assert len(events) == 500
    received = [json.loads(body)["data"]["n"] for _, _, body in get_all(broker_url, bound_queue)]
    assert received == list(range(500))


def test_an_event_nobody_listens_to_is_not_an_error(broker_url: str, name: str) -> None:
    # No queue is bound: RabbitMQ drops the event and still confirms it.
    event = publish_domain_event(
        f"{name}.unheard", {"n": 1}, "obj-1", connection_settings=broker_url
    )
    assert isinstance(event, DomainEvent)
    assert (event.routing_key, event.data, event.domain_object_id) == (
        f"{name}.unheard",
        {"n": 1},
        "obj-1",
    )
    assert len(event.uuid_string) == 36
    assert abs(event.timestamp - time.time()) < 60


@pytest.mark.parametrize("connection_settings", ["", None], ids=["broker", "no broker"])
def test_publish_domain_event_goes_through_publisher_publish(
    connection_settings: str | None, name: str
) -> None:
    # What 3.x test suites do: patch Publisher.publish and check its two arguments.
    from unittest import mock

    with mock.patch("domain_event_broker.transport.Publisher.publish") as publish:
        event = publish_domain_event(
            f"{name}.happened", {"n": 1}, connection_settings=connection_settings
        )
    publish.assert_called_once_with(event.to_json(), f"{name}.happened")


def test_a_published_event_carries_its_id_and_injected_headers(
    broker_url: str, bound_queue: str
) -> None:
    from domain_event_broker.observability import add_header_injector

    remove = add_header_injector(lambda key, message_id: {"x-trace": f"{key}/{message_id}"})
    try:
        event = publish_domain_event(f"{bound_queue}.traced", {}, connection_settings=broker_url)
    finally:
        remove()
    ((_method, properties, body),) = get_all(broker_url, bound_queue)
    assert properties.message_id == event.uuid_string
    assert properties.headers == {"x-trace": f"{bound_queue}.traced/{event.uuid_string}"}
    assert body == event.to_json().encode()


def test_the_publish_timeout_setting_is_read_at_call_time(
    broker_url: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Zero seconds: no confirm can arrive in time, so the publish gives up at once.
    monkeypatch.setattr(settings, "PUBLISH_TIMEOUT", 0.0)
    with pytest.raises(PublishError, match="in time"):
        publish_domain_event(f"{name}.hurried", {}, connection_settings=broker_url)
    monkeypatch.setattr(settings, "PUBLISH_TIMEOUT", 30.0)
    publish_domain_event(f"{name}.patient", {}, connection_settings=broker_url)


def test_a_per_call_publish_timeout_wins_over_the_setting(
    vhost: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broker that takes events but keeps its confirms to itself.
    proxy = FreezingProxy()
    proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    monkeypatch.setattr(settings, "PUBLISH_TIMEOUT", 30.0)
    try:
        with Publisher(url) as publisher:
            proxy.freeze()
            started = time.monotonic()
            with pytest.raises(PublishError, match="in time"):
                publisher.publish("{}", f"{name}.hurried", publish_timeout=0.5)
            assert time.monotonic() - started < 5, "the setting's 30 s were waited"
            monkeypatch.setattr(settings, "PUBLISH_TIMEOUT", 0.5)
            started = time.monotonic()
            with pytest.raises(PublishError, match="in time"):
                publisher.publish("{}", f"{name}.hurried")
            assert time.monotonic() - started < 5, "the setting is not read at call time"
    finally:
        proxy.stop()


def test_an_event_the_broker_refuses_raises_publish_error(
    broker_url: str, channel: Any, name: str
) -> None:
    # A full queue that rejects publishes makes RabbitMQ nack the event.
    channel.queue_declare(
        name, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    try:
        with pytest.raises(PublishError, match="refused"):
            publish_domain_event(f"{name}.rejected", {}, connection_settings=broker_url)
    finally:
        channel.queue_delete(name)


def test_unreachable_broker_fails_fast_naming_host_port_vhost_but_not_password() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        publish_domain_event(
            "user.registered",
            {},
            connection_settings="amqp://app:topsecret@127.0.0.1:5999/shop",
        )
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert "topsecret" not in message
    assert "amqp://app:***@127.0.0.1:5999/shop" in message
    assert "port 5999" in message and "vhost 'shop'" in message
    assert "refused" in message


def test_unknown_vhost_says_so(broker_url: str) -> None:
    with pytest.raises(BrokerUnavailable, match="vhost"):
        Publisher(broker_url.rsplit("/", 1)[0] + "/no-such-vhost")


def test_wrong_password_says_so_without_printing_it() -> None:
    with pytest.raises(BrokerUnavailable) as raised:
        Publisher(broker_at(password="wrong-password"))
    assert "wrong-password" not in str(raised.value)
    assert "password" in str(raised.value)


def test_bad_routing_key_is_refused_before_connecting() -> None:
    # The URL is unreachable: an InvalidRoutingKey proves nothing was attempted.
    with pytest.raises(InvalidRoutingKey):
        publish_domain_event("user.*", {}, connection_settings="amqp://127.0.0.1:5999/%2F")
    with pytest.raises(InvalidRoutingKey):
        publish_domain_event("", {}, connection_settings="amqp://127.0.0.1:5999/%2F")


def test_data_that_is_not_json_is_refused_before_connecting() -> None:
    with pytest.raises(EventNotSerializable, match=r"data\['when'\]"):
        publish_domain_event(
            "user.registered", {"when": object()}, connection_settings="amqp://127.0.0.1:5999/%2F"
        )


def test_publisher_recovers_its_connection_after_the_broker_closed_it(
    broker_url: str, vhost: str, bound_queue: str
) -> None:
    publish_domain_event(f"{bound_queue}.before", {}, connection_settings=broker_url)
    rabbitmqctl("close_all_connections", "-p", vhost, "test: dropped on purpose")
    publish_domain_event(f"{bound_queue}.after", {}, connection_settings=broker_url)
    keys = [method.routing_key for method, _, _ in get_all(broker_url, bound_queue)]
    assert keys == [f"{bound_queue}.before", f"{bound_queue}.after"]


def test_raw_pika_message_properties_are_left_alone(broker_url: str, bound_queue: str) -> None:
    properties = pika.BasicProperties(delivery_mode=2, headers={"trace": "abc"})
    with Publisher(broker_url) as publisher:
        publisher.publish("{}", f"{bound_queue}.raw", properties=properties)
    [(_, received, _)] = get_all(broker_url, bound_queue)
    assert received.headers == {"trace": "abc"}


def test_several_node_urls_fail_over_to_a_node_that_answers(
    broker_url: str, vhost: str, bound_queue: str
) -> None:
    down_node = f"amqp://guest:guest@127.0.0.1:5999/{vhost}"
    with Publisher(f"{down_node},{broker_url}") as publisher:
        publisher.publish_event(DomainEvent(f"{bound_queue}.x", {}))
    assert len(get_all(broker_url, bound_queue)) == 1


def test_an_unreachable_cluster_names_every_node() -> None:
    with pytest.raises(BrokerUnavailable) as raised:
        Publisher("amqp://u:pw1@127.0.0.1:5998/%2F,amqp://u:pw2@127.0.0.1:5999/%2F")
    message = str(raised.value)
    assert "port 5998" in message and "port 5999" in message
    assert "pw1" not in message and "pw2" not in message


@pytest.fixture
def max_message_size(broker_url: str) -> Iterator[int]:
    """The broker's max_message_size, lowered where the node takes that (see outbox_support)."""
    with lowered_max_message_size(broker_url) as limit:
        yield limit


@pytest.mark.disrupts_broker
def test_an_event_over_max_message_size_fails_alone_at_once(
    name: str,
    broker_url: str,
    max_message_size: int,
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
) -> None:
    subscriber = make_driver()
    subscriber.register(print, name, [f"{name}.#"])
    publisher = make_publishing(publish_timeout=30.0)
    publisher.publish_event(DomainEvent(f"{name}.small", {"n": -1}))
    large = DomainEvent(f"{name}.large", {"blob": "x" * (max_message_size + 1)})
    for attempt in ("the broker refuses it", "the publisher knows the limit now"):
        started = time.monotonic()
        with pytest.raises(EventTooLarge) as raised:
            publisher.publish_event(large)
        assert time.monotonic() - started < 5, attempt
        message = str(raised.value)
        assert "max_message_size" in message and str(max_message_size) in message
        assert large.uuid_string in message and ":guest@" not in message
    # The others go on: 20 publishes right after it finish within 5 s.
    started = time.monotonic()
    for number in range(20):
        publisher.publish_event(DomainEvent(f"{name}.small", {"n": number}))
    assert time.monotonic() - started < 5
    assert queue_depth(broker_url, name) == 21  # and the large event never arrived
    # In a batch too it fails alone, whether the publisher knows the limit yet or not.
    fresh = make_publishing(publish_timeout=30.0)
    for batch_publisher in (fresh, fresh, publisher):
        batch = [DomainEvent(f"{name}.small", {"n": n}) for n in range(10)]
        batch.insert(5, large)
        started = time.monotonic()
        outcomes = batch_publisher.publish_batch(batch)
        assert time.monotonic() - started < 5
        assert [index for index, outcome in enumerate(outcomes) if not outcome.confirmed] == [5]
        assert isinstance(outcomes[5].error, EventTooLarge)
        message = str(outcomes[5].error)
        assert message.count("RabbitMQ at") == 1, message
    # Each small event stored (a re-send after the channel closed may store one twice).
    assert queue_depth(broker_url, name) >= 21 + 3 * 10
