"""Delayed retries: per-delay wait queues, counting, max_retries, confirm before ack."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pika
import pytest

from domain_event_broker import (
    DomainEvent,
    Retry,
    Subscriber,
    publish_domain_event,
    replay_event,
    wait_queues,
)
from domain_event_broker.topology import RETRIES_HEADER, ROUTING_KEY_HEADER, SubscriberTopology
from drivers import Driver
from support import consume_until, delete_queues, get_all, queue_depth, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]


def test_retried_event_comes_back_with_growing_delays_and_succeeds(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    attempts: list[int] = []
    handled: list[DomainEvent] = []

    def flaky(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries < 2:
            raise Retry(0.2 * 2**event.retries)  # 0.2 s, then 0.4 s
        handled.append(event)

    subscriber = make_subscriber()
    subscriber.register(flaky, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    sent = publish_domain_event(f"{name}.sync", {"id": 1}, connection_settings=broker_url)
    elapsed = consume_until(subscriber, lambda: bool(handled), timeout=15)
    assert attempts == [0, 1, 2]
    assert handled == [sent]
    assert elapsed >= 0.6, "the retries did not wait their delays"
    assert queue_depth(broker_url, name) == 0
    assert queue_depth(broker_url, f"{name}-dl") == 0
    queues = rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "arguments")
    wait_queue = next(line for line in queues.splitlines() if line.startswith(f"{name}-wait-200\t"))
    arguments = wait_queue.split("\t", 1)[1].replace(" ", "")
    # Back through the default exchange, straight to the subscriber's queue; no lease.
    # (rabbitmqctl shows the empty name of the default exchange as [])
    assert '"x-dead-letter-exchange",[]' in arguments
    assert f'"x-dead-letter-routing-key","{name}"' in arguments
    assert '"x-message-ttl",200' in arguments
    assert "x-expires" not in arguments


def test_a_short_delay_does_not_wait_behind_a_long_one(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    order: list[tuple[str, int]] = []

    def handler(event: DomainEvent) -> None:
        order.append((event.data["which"], event.retries))
        if event.retries == 0:
            raise Retry(event.data["delay"])

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=1)
    publish_domain_event(
        f"{name}.x", {"which": "slow", "delay": 3.0}, connection_settings=broker_url
    )
    publish_domain_event(
        f"{name}.x", {"which": "fast", "delay": 0.2}, connection_settings=broker_url
    )
    consume_until(subscriber, lambda: len(order) >= 4, timeout=15)
    assert order == [("slow", 0), ("fast", 0), ("fast", 1), ("slow", 1)]


def test_retries_count_every_delivery_even_with_mixed_delays(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    seen: list[int] = []
    delays = [0.1, 0.3, 0.1, 0.2]

    def handler(event: DomainEvent) -> None:
        seen.append(event.retries)
        if event.retries < len(delays):
            raise Retry(delays[event.retries])

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=10)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(seen) >= 5, timeout=15, settle=0.5)
    assert seen == [0, 1, 2, 3, 4]


def test_over_max_retries_the_event_is_dead_lettered_and_logged(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def always_retry(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise Retry(0.05)

    subscriber = make_subscriber()
    subscriber.register(always_retry, name, [f"{name}.#"], dead_letter=True, max_retries=2)
    sent = publish_domain_event(f"{name}.x", {"k": "v"}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        consume_until(
            subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, timeout=15, settle=0.3
        )
    assert calls == [0, 1, 2]
    [(method, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert DomainEvent.from_json(body) == sent
    assert method.routing_key == f"{name}.x"
    assert properties.headers["x-domain-event-failed-subscriber"] == name
    assert "max_retries (2)" in properties.headers["x-domain-event-exception-message"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(sent.uuid_string in line and "max_retries" in line for line in errors)


def test_over_max_retries_without_dead_letter_queue_the_event_is_dropped_and_logged(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def always_retry(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise Retry(0.05)

    subscriber = make_subscriber()
    subscriber.register(always_retry, name, [f"{name}.#"], max_retries=1)
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        consume_until(subscriber, lambda: len(calls) >= 2, timeout=15, settle=0.5)
    assert calls == [0, 1]
    assert queue_depth(broker_url, name) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(sent.uuid_string in line and "dropped" in line for line in errors)


def test_max_retries_zero_means_the_first_retry_dead_letters(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    calls: list[int] = []

    def retry(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise Retry(0.05)

    subscriber = make_subscriber()
    subscriber.register(retry, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, settle=0.3)
    assert calls == [0]


def test_a_waiting_retry_is_stored_in_its_wait_queue_not_lost_when_the_subscriber_stops(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    calls: list[int] = []

    def later(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise Retry(60)

    subscriber = make_subscriber()
    subscriber.register(later, name, [f"{name}.#"], max_retries=3)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: bool(calls), settle=0.3)
    assert queue_depth(broker_url, name) == 0
    [(_, properties, _)] = get_all(broker_url, f"{name}-wait-60000")
    assert properties.headers[RETRIES_HEADER] == 1
    assert properties.headers[ROUTING_KEY_HEADER] == f"{name}.x"


def test_when_the_retry_copy_is_refused_the_original_is_not_acked(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # A policy makes the wait queue refuse every message: the broker nacks the
    # delayed copy. The original must stay in the subscriber's queue.
    policy = f"{name}-refuse"
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        policy,
        f"^{name}-wait-",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    try:
        calls: list[int] = []

        def retry(event: DomainEvent) -> None:
            calls.append(event.retries)
            raise Retry(0.1)

        subscriber = make_subscriber()
        subscriber.register(retry, name, [f"{name}.#"], max_retries=5)
        publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
        consume_until(subscriber, lambda: len(calls) >= 2, settle=0.2)
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, policy)
    assert set(calls) == {0}, "the retry count advanced although no copy was stored"
    assert queue_depth(broker_url, name) == 1


def test_events_retried_by_the_old_library_are_counted_from_x_death(
    broker_url: str,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    name: str,
    make_subscriber: MakeSubscriber,
) -> None:
    seen: list[int] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: seen.append(e.retries), name, [f"{name}.#"], max_retries=5)
    # As the old library left it: two wait queues, x-death entries with counts, no header of ours.
    old_style = {
        "x-death": [
            {
                "queue": f"{name}-delay-1000",
                "reason": "expired",
                "count": 2,
                "exchange": f"{name}-delay-1000",
                "routing-keys": [f"{name}.x"],
            },
            {
                "queue": f"{name}-delay-5000",
                "reason": "expired",
                "count": 1,
                "exchange": f"{name}-delay-5000",
                "routing-keys": [f"{name}.x"],
            },
            {
                "queue": name,
                "reason": "rejected",
                "count": 1,
                "exchange": "domain-events",
                "routing-keys": [f"{name}.x"],
            },
        ]
    }
    channel.basic_publish(
        f"{name}-retry",
        f"{name}.x",
        DomainEvent(f"{name}.x").to_json(),
        pika.BasicProperties(delivery_mode=2, headers=old_style),
    )
    consume_until(subscriber, lambda: bool(seen), settle=0.2)
    assert seen == [3]


def test_an_old_style_retry_through_a_real_wait_queue_counts_one(
    broker_url: str,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    name: str,
    make_subscriber: MakeSubscriber,
) -> None:
    seen: list[int] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: seen.append(e.retries), name, [f"{name}.#"], max_retries=5)
    # What the old library did on Retry(0.1): declare the wait queue, publish the body there.
    wait = f"{name}-delay-100"
    channel.queue_declare(
        wait,
        durable=True,
        arguments={
            "x-dead-letter-exchange": f"{name}-retry",
            "x-message-ttl": 100,
            "x-expires": 10100,
        },
    )
    channel.exchange_declare(wait, exchange_type="topic", durable=True, auto_delete=True)
    channel.queue_bind(wait, wait, routing_key="#")
    channel.basic_publish(
        wait, f"{name}.x", DomainEvent(f"{name}.x").to_json(), pika.BasicProperties(delivery_mode=2)
    )
    consume_until(subscriber, lambda: bool(seen), settle=0.2)
    assert seen == [1]


@pytest.mark.timeout(90)
def test_two_long_retries_twelve_seconds_apart_both_come_back(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # 3.x gave the wait queue an x-expires lease of delay + 10 s, renewed only by a
    # declare: the queue was deleted with the second copy inside.
    back: list[int] = []
    first_seen = threading.Event()

    def handler(event: DomainEvent) -> None:
        if event.retries == 0:
            first_seen.set()
            raise Retry(20)
        back.append(event.data["n"])

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=1)
    publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)

    def publish_second() -> None:
        first_seen.wait(20)
        time.sleep(12)
        publish_domain_event(f"{name}.x", {"n": 2}, connection_settings=broker_url)

    publisher = threading.Thread(target=publish_second)
    publisher.start()
    consume_until(subscriber, lambda: len(back) == 2, timeout=60)
    publisher.join()
    assert sorted(back) == [1, 2]


def test_a_retried_then_dead_lettered_event_keeps_its_routing_key_and_replays(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    seen: list[tuple[str, int]] = []

    def handler(event: DomainEvent) -> None:
        seen.append((event.routing_key, event.retries))
        if event.data.get("replayed"):
            return
        if event.retries == 0:
            raise Retry(0.1)
        raise ValueError("still broken")

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    publish_domain_event(f"{name}.a.b", {}, connection_settings=broker_url)
    consume_until(
        subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, timeout=15, settle=0.3
    )
    assert seen == [(f"{name}.a.b", 0), (f"{name}.a.b", 1)]
    [(method, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert method.routing_key == f"{name}.a.b"
    # Back into the dead-letter queue, then replayed: it reaches the handler once more.
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        connection.channel().basic_publish(f"{name}-dlx", method.routing_key, body, properties)
    assert replay_event(name, connection_settings=broker_url) == 0
    consume_until(subscriber, lambda: len(seen) == 3, timeout=15, settle=0.3)
    assert seen[2] == (f"{name}.a.b", 0)


@pytest.fixture
def short_idle_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wait queues idle 0.5 s after their delay, looked at every 0.2 s."""
    monkeypatch.setattr(wait_queues, "IDLE_AFTER", 0.5)
    monkeypatch.setattr(wait_queues, "CHECK_INTERVAL", 0.2)


def retrying_once_after_100_ms(attempts: list[int]) -> Callable[[DomainEvent], None]:
    """A handler that notes each delivery's retries and asks for one Retry(0.1)."""

    def handler(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            raise Retry(0.1)

    return handler


def test_an_idle_wait_queue_is_removed_but_never_while_it_holds_a_copy(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, short_idle_times: None
) -> None:
    attempts: list[int] = []
    handler = retrying_once_after_100_ms(attempts)

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=1)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(attempts) == 2, timeout=15)
    assert wait_queue_exists(broker_url, f"{name}-wait-100")
    # Idle for delay + 0.5 s, looked at every 0.2 s: the subscriber removes it.
    consume_until(
        subscriber, lambda: not wait_queue_exists(broker_url, f"{name}-wait-100"), timeout=10
    )

    # A wait queue that holds a copy (ours not yet due, or another instance's) stays.
    topology = SubscriberTopology(name, (f"{name}.#",))
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        topology.declare_wait_queue(channel, 60_000, now=0.0)
        channel.basic_publish("", f"{name}-wait-60000", b"{}")
        # The first look only schedules the next one; from then on every look counts.
        assert topology.remove_idle_wait_queues(connection, now=0.0) == []
        much_later = 10**6
        assert topology.remove_idle_wait_queues(connection, now=much_later) == []
        assert queue_depth(broker_url, f"{name}-wait-60000") == 1
        channel.queue_purge(f"{name}-wait-60000")
        later_still = much_later + 60 + wait_queues.IDLE_AFTER + 1
        assert topology.remove_idle_wait_queues(connection, now=later_still) == [
            f"{name}-wait-60000"
        ]
    assert not wait_queue_exists(broker_url, f"{name}-wait-60000")


def wait_queue_exists(broker_url: str, queue: str) -> bool:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        try:
            connection.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_jittered_retry_delays_share_a_few_wait_queues(
    broker_url: str,
    vhost: str,
    name: str,
    queue_type: str,
    make_driver: Callable[..., Driver],
) -> None:
    # A common backoff: Retry(random.uniform(1, 3)). One wait queue per millisecond
    # value would leave 60 queues (replicated ones, never removed, for quorum).
    jitter = random.Random(60)
    attempts: Counter[int] = Counter()

    def handle(event: DomainEvent) -> None:
        attempts[event.data["n"]] += 1
        if event.retries == 0:
            raise Retry(jitter.uniform(1, 3))

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], max_retries=1, queue_type=queue_type)
    for number in range(60):
        publish_domain_event(f"{name}.happened", {"n": number}, connection_settings=broker_url)
    try:
        subscriber.run_until(lambda: len(attempts) == 60 and min(attempts.values()) == 2, 30)
        assert attempts == dict.fromkeys(range(60), 2)  # each retried once, then handled
        wait_queues_left = [
            line.split("\t")[0]
            for line in rabbitmqctl("list_queues", "-p", vhost, "name", "-q").splitlines()
            if line.startswith(f"{name}-wait-")
        ]
        assert 1 <= len(wait_queues_left) <= 20, wait_queues_left
        # Each delay is rounded to at most 1/16 of its decade: 125 ms steps here.
        assert all(int(queue.rsplit("-", 1)[1]) % 125 == 0 for queue in wait_queues_left)
        assert queue_depth(broker_url, name) == 0
    finally:
        delete_queues(broker_url, *(f"{name}-wait-{ms}" for ms in range(1000, 3001, 125)))


def test_an_idle_wait_queue_stays_while_another_instance_of_the_subscriber_runs(
    broker_url: str,
    name: str,
    make_driver: Callable[..., Driver],
    short_idle_times: None,
) -> None:
    # RabbitMQ confirms a copy routed into a queue deleted before the copy is in it:
    # removing a wait queue that another instance routes a copy into could lose it.
    attempts: list[int] = []
    handler = retrying_once_after_100_ms(attempts)

    subscriber = make_driver()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=1)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    subscriber.run_until(lambda: len(attempts) == 2, timeout=15)
    assert attempts == [0, 1]
    # Another instance of the subscriber consumes its queue (here: a plain consumer).
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        other = connection.channel()
        other.basic_consume(name, lambda *_: None)
        took = subscriber.run_for(3.0)  # idle after 0.6 s, looked at every 0.2 s
        assert took >= 2.9
        assert wait_queue_exists(broker_url, f"{name}-wait-100"), "removed under another"
    # Alone again: the idle wait queue goes.
    subscriber.run_until(lambda: not wait_queue_exists(broker_url, f"{name}-wait-100"), 10)
