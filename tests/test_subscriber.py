"""Subscribing: routing, several handlers, competing consumers, heartbeats, stopping."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from domain_event_broker import DomainEvent, InvalidRoutingKey, Subscriber, publish_domain_event
from drivers import Driver
from support import consume_until, queue_depth, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]


def test_handler_receives_the_event_once_with_its_data(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[DomainEvent] = []
    subscriber = make_subscriber()
    subscriber.register(received.append, name, [f"{name}.registered"])
    sent = publish_domain_event(
        f"{name}.registered", {"user_id": 7}, domain_object_id="7", connection_settings=broker_url
    )
    consume_until(subscriber, lambda: len(received) >= 1, settle=0.3)
    assert received == [sent]
    assert received[0].data == {"user_id": 7}
    assert received[0].retries == 0
    assert queue_depth(broker_url, name) == 0


def test_binding_keys_with_wildcards_route_only_matching_events(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[str] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: received.append(e.routing_key), name, [f"{name}.user.*"])
    for key in ("user.registered", "user.registered.eu", "order.shipped", "user.deleted"):
        publish_domain_event(f"{name}.{key}", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(received) >= 2, settle=0.3)
    assert received == [f"{name}.user.registered", f"{name}.user.deleted"]


def test_a_single_binding_key_string_is_one_key_not_its_characters(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[str] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: received.append(e.routing_key), name, f"{name}.#")
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: received == [f"{name}.x"])


def test_several_handlers_on_one_subscriber_each_get_their_events(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    users: list[str] = []
    orders: list[str] = []
    everything: list[str] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: users.append(e.routing_key), f"{name}-users", [f"{name}.user.*"])
    subscriber.register(
        lambda e: orders.append(e.routing_key), f"{name}-orders", [f"{name}.order.*"]
    )
    subscriber.register(lambda e: everything.append(e.routing_key), f"{name}-all", [f"{name}.#"])
    publish_domain_event(f"{name}.user.registered", {}, connection_settings=broker_url)
    publish_domain_event(f"{name}.order.shipped", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(everything) >= 2 and users and orders, settle=0.3)
    assert users == [f"{name}.user.registered"]
    assert orders == [f"{name}.order.shipped"]
    assert sorted(everything) == sorted(users + orders)


def test_registering_an_invalid_binding_key_fails_before_declaring(
    name: str, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber()
    with pytest.raises(InvalidRoutingKey):
        subscriber.register(print, name, ["user*"])
    with pytest.raises(ValueError, match="at least one binding key"):
        subscriber.register(print, name, [])
    assert subscriber.registered_names == []


def test_subscribers_sharing_a_name_share_the_work(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    handled: Counter[int] = Counter()
    by_subscriber: Counter[str] = Counter()
    lock = threading.Lock()

    def handler_for(who: str) -> Callable[[DomainEvent], None]:
        def handle(event: DomainEvent) -> None:
            time.sleep(0.01)
            with lock:
                handled[event.data["n"]] += 1
                by_subscriber[who] += 1

        return handle

    first = make_subscriber(prefetch_count=1)
    second = make_subscriber(prefetch_count=1)
    first.register(handler_for("first"), name, [f"{name}.#"])
    second.register(handler_for("second"), name, [f"{name}.#"])
    for n in range(60):
        publish_domain_event(f"{name}.job", {"n": n}, connection_settings=broker_url)
    runner = threading.Thread(
        target=consume_until, args=(second, lambda: sum(handled.values()) >= 60, 30, 0.3)
    )
    runner.start()
    consume_until(first, lambda: sum(handled.values()) >= 60, timeout=30, settle=0.3)
    runner.join()
    assert sorted(handled) == list(range(60))
    assert set(handled.values()) == {1}, "an event was handled twice"
    assert by_subscriber["first"] > 5 and by_subscriber["second"] > 5


def test_durable_queue_keeps_events_while_the_subscriber_is_down(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[int] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: received.append(e.data["n"]), name, [f"{name}.#"])
    subscriber.stop_consuming()  # declared, then down
    for n in range(3):
        publish_domain_event(f"{name}.happened", {"n": n}, connection_settings=broker_url)
    assert queue_depth(broker_url, name) == 3
    restarted = make_subscriber()
    restarted.register(lambda e: received.append(e.data["n"]), name, [f"{name}.#"])
    consume_until(restarted, lambda: len(received) >= 3, settle=0.2)
    assert received == [0, 1, 2]


def test_slow_handler_on_a_one_second_heartbeat_is_still_acked(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    calls: list[float] = []

    def slow(event: DomainEvent) -> None:
        calls.append(time.monotonic())
        time.sleep(3)

    subscriber = make_subscriber(f"{broker_url}?heartbeat=1")
    subscriber.register(slow, name, [f"{name}.#"])
    publish_domain_event(f"{name}.slow", {}, connection_settings=broker_url)
    # Without heartbeats during the handler the broker drops the connection
    # after ~2 s and redelivers the event, which calls the handler again.
    consume_until(subscriber, lambda: bool(calls) and time.monotonic() - calls[0] > 4.5, 15)
    assert len(calls) == 1, "the event was redelivered: the connection dropped"
    assert queue_depth(broker_url, name) == 0


def test_workers_run_handlers_concurrently(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    finished: list[int] = []
    subscriber = make_subscriber(workers=4)
    subscriber.register(
        lambda e: (time.sleep(1.0), finished.append(e.data["n"])), name, [f"{name}.#"]
    )
    for n in range(4):
        publish_domain_event(f"{name}.slow", {"n": n}, connection_settings=broker_url)
    elapsed = consume_until(subscriber, lambda: len(finished) >= 4, timeout=10)
    assert sorted(finished) == [0, 1, 2, 3]
    assert elapsed < 3.0, f"4 handlers of 1 s on 4 workers took {elapsed:.1f} s"


def test_start_consuming_returns_after_its_timeout(
    name: str, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber()
    subscriber.register(print, name, [f"{name}.#"])
    started = time.monotonic()
    subscriber.start_consuming(timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 3


def test_stop_consuming_from_another_thread_lets_the_handler_finish_and_acks(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    started = threading.Event()
    finished: list[str] = []

    def slow(event: DomainEvent) -> None:
        started.set()
        time.sleep(1.5)
        finished.append(event.uuid_string)

    subscriber = make_subscriber()
    subscriber.register(slow, name, [f"{name}.#"])
    for _ in range(3):
        publish_domain_event(f"{name}.slow", {}, connection_settings=broker_url)
    thread = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 30})
    thread.start()
    assert started.wait(10)
    subscriber.stop_consuming()
    thread.join(10)
    assert not thread.is_alive()
    assert len(finished) == 1, "stop let more events start, or cut the running one short"
    # The finished one was acked; the two that never started are back in the queue.
    assert queue_depth(broker_url, name) == 2


def test_stop_consuming_from_inside_a_handler(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    handled: list[DomainEvent] = []
    subscriber = make_subscriber()

    def handle_one(event: DomainEvent) -> None:
        handled.append(event)
        subscriber.stop_consuming()

    subscriber.register(handle_one, name, [f"{name}.#"])
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    started = time.monotonic()
    subscriber.start_consuming(timeout=20)
    assert time.monotonic() - started < 10
    assert len(handled) == 1
    assert queue_depth(broker_url, name) == 0


def test_no_broker_subscriber_does_nothing(vhost: str) -> None:
    connections_before = rabbitmqctl("list_connections", "-q", "name").splitlines()
    subscriber = Subscriber(None)
    subscriber.register(print, "nobody", ["user.*"])
    started = time.monotonic()
    subscriber.start_consuming(timeout=10)
    assert time.monotonic() - started < 1, "start_consuming waited for events that cannot come"
    subscriber.stop_consuming()
    assert not subscriber.connected
    assert not subscriber.consuming
    assert subscriber.registered_names == []
    assert subscriber.last_handled_at is None
    # No connection was opened and no queue declared, on any vhost.
    connections_after = rabbitmqctl("list_connections", "-q", "name").splitlines()
    assert not [c for c in connections_after if "subscriber" in c and c not in connections_before]
    for listed_vhost in ("/", vhost):
        assert "nobody" not in rabbitmqctl("list_queues", "-q", "-p", listed_vhost, "name").split()


def test_exclusive_auto_delete_queue_goes_away_with_its_subscriber(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber()
    subscriber.register(print, name, [f"{name}.#"], durable=False, exclusive=True, auto_delete=True)
    queues = rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "durable", "exclusive")
    assert f"{name}\tfalse\ttrue" in queues
    subscriber.start_consuming(timeout=0.2)
    queues = rabbitmqctl("list_queues", "-q", "-p", vhost, "name")
    assert name not in queues.split()


def test_subscriber_fails_over_to_a_node_that_answers(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[DomainEvent] = []
    subscriber = make_subscriber(f"amqp://guest:guest@127.0.0.1:5999/{vhost},{broker_url}")
    subscriber.register(received.append, name, [f"{name}.#"])
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: bool(received))
    assert received == [sent]


def test_starting_says_per_registration_what_becomes_of_a_failed_event(
    name: str, make_driver: Callable[..., Driver], caplog: pytest.LogCaptureFixture
) -> None:
    subscriber = make_driver()
    subscriber.register(print, f"{name}-a", [f"{name}.a", f"{name}.b.*"])
    subscriber.register(print, f"{name}-b", [f"{name}.c"], max_retries=3, dead_letter=True)
    with caplog.at_level(logging.INFO, logger="domain_event_broker"):
        subscriber.run_for(0.3)
    lines = [r.getMessage() for r in caplog.records if "consuming queue" in r.getMessage()]
    assert lines == [
        f"subscriber {name}-a consuming queue {name}-a for {name}.a, {name}.b.*: no retries "
        "(max_retries=0: a Retry drops the event); failed events are dropped "
        "(dead_letter=False)",
        f"subscriber {name}-b consuming queue {name}-b for {name}.c: a Retry is tried again "
        f"up to 3 times; failed events go to {name}-b-dl",
    ]
