"""The asyncio publisher and subscriber on the real broker, and beside the sync side."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pika
import pytest

from domain_event_broker import (
    BrokerUnavailable,
    DomainEvent,
    Publisher,
    Retry,
    publish_domain_event,
    replay,
)
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber
from domain_event_broker.aio import publish_domain_event as apublish
from domain_event_broker.errors import EventNotSerializable, InvalidRoutingKey
from domain_event_broker.messages import OutgoingMessage, PublishOutcome
from domain_event_broker.topology import (
    EXCEPTION_TYPE_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    RETRIES_HEADER,
    ROUTING_KEY_HEADER,
)
from support import consume_until, get_all, queue_depth

from .conftest import MakeAsyncSubscriber
from .helpers import delete_topology, run_until


def declare_plain_queue(broker_url: str, queue: str, key: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", "topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "domain-events", key)


def test_async_publish_writes_the_sync_wire_bytes(broker_url: str, name: str) -> None:
    declare_plain_queue(broker_url, name, f"{name}.#")
    try:
        event = asyncio.run(
            apublish(f"{name}.x", {"n": 1, "s": "é"}, "obj-1", connection_settings=broker_url)
        )
        sync_event = publish_domain_event(
            f"{name}.x",
            {"n": 1, "s": "é"},
            "obj-1",
            uuid_string=event.uuid_string,
            timestamp=event.timestamp,
            connection_settings=broker_url,
        )
        [(_, async_props, async_body), (_, sync_props, sync_body)] = get_all(broker_url, name)
        assert async_body == sync_body == event.to_json().encode() == sync_event.to_json().encode()
        assert async_props.delivery_mode == sync_props.delivery_mode == 2
        assert async_props.message_id == event.uuid_string
        assert async_props.content_type == "application/json"
    finally:
        delete_topology(broker_url, name)


def test_async_publish_validates_like_the_sync_call(broker_url: str) -> None:
    with pytest.raises(InvalidRoutingKey):
        asyncio.run(apublish("", {}, connection_settings=broker_url))
    with pytest.raises(EventNotSerializable):
        asyncio.run(apublish("a.b", {"x": object()}, connection_settings=broker_url))
    event = asyncio.run(apublish("a.b", {"x": 1}, connection_settings=None))
    assert event.data == {"x": 1}


def test_unreachable_broker_error_names_no_password() -> None:
    async def publish() -> None:
        publisher = AsyncPublisher(
            "amqp://guest:topsecretpw@127.0.0.1:1/%2F", publish_timeout=1.0, connect_timeout=1.0
        )
        await publisher.publish_event(DomainEvent("a.b"))

    with pytest.raises(BrokerUnavailable) as caught:
        asyncio.run(publish())
    assert "port 1" in str(caught.value)
    assert "topsecret" not in str(caught.value) and "secretpw" not in str(caught.value)


def test_publish_many_reports_each_event(broker_url: str, name: str) -> None:
    declare_plain_queue(broker_url, name, f"{name}.#")

    async def publish() -> list[bool]:
        async with AsyncPublisher(broker_url) as publisher:
            events = [DomainEvent(f"{name}.x", {"n": n}) for n in range(1200)]
            outcomes = await publisher.publish_many(events)
            # and concurrent single publishes share the channel
            await asyncio.gather(
                *(publisher.publish_event(DomainEvent(f"{name}.y", {"n": n})) for n in range(50))
            )
            return [outcome.confirmed for outcome in outcomes]

    try:
        assert asyncio.run(publish()) == [True] * 1200
        assert queue_depth(broker_url, name) == 1250
    finally:
        delete_topology(broker_url, name)


def test_publish_batch_reports_each_message_as_the_sync_publisher_does(
    broker_url: str, name: str
) -> None:
    # The same call on both sides: one outcome per message, in order.
    declare_plain_queue(broker_url, name, f"{name}.#")
    messages = [OutgoingMessage(f"{name}.x", f'{{"n": {n}}}'.encode()) for n in range(3)]

    async def publish() -> list[PublishOutcome]:
        async with AsyncPublisher(broker_url) as publisher:
            return await publisher.publish_batch(messages, publish_timeout=10)

    async def without_broker() -> list[PublishOutcome]:
        return await AsyncPublisher(None).publish_batch(messages)

    try:
        outcomes = asyncio.run(publish())
        with Publisher(broker_url) as sync_publisher:
            sync_outcomes = sync_publisher.publish_batch(messages, publish_timeout=10)
        assert [outcome.message for outcome in outcomes] == messages
        assert [outcome.confirmed for outcome in outcomes] == [True, True, True]
        assert [outcome.confirmed for outcome in sync_outcomes] == [True, True, True]
        assert queue_depth(broker_url, name) == 6
        unsent = asyncio.run(without_broker())
        assert [outcome.confirmed for outcome in unsent] == [False, False, False]
        assert all("no broker configured" in str(outcome.error) for outcome in unsent)
    finally:
        delete_topology(broker_url, name)


def test_async_subscriber_gets_events_from_the_sync_publisher_in_order(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    received: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        received.append(event)

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"])

    async def main() -> None:
        await subscriber.declare()
        sent = [
            publish_domain_event(f"{name}.x", {"n": n}, connection_settings=broker_url)
            for n in range(20)
        ]
        await run_until(subscriber, lambda: len(received) == 20, settle=0.2)
        assert received == sent

    asyncio.run(main())
    assert queue_depth(broker_url, name) == 0


def test_sync_subscriber_gets_events_from_the_async_publisher(
    broker_url: str, name: str, make_subscriber: object
) -> None:
    received: list[DomainEvent] = []
    subscriber = make_subscriber()  # type: ignore[operator]
    subscriber.register(received.append, name, [f"{name}.#"])

    async def publish() -> list[DomainEvent]:
        async with AsyncPublisher(broker_url) as publisher:
            events = [DomainEvent(f"{name}.x", {"n": n}) for n in range(10)]
            outcomes = await publisher.publish_many(events)
            assert all(outcome.confirmed for outcome in outcomes)
            return events

    sent = asyncio.run(publish())
    consume_until(subscriber, lambda: len(received) == 10, settle=0.2)
    assert received == sent


def test_a_retry_started_async_comes_back_counted_to_the_sync_side(
    broker_url: str,
    name: str,
    make_async_subscriber: MakeAsyncSubscriber,
    make_subscriber: object,
) -> None:
    seen_async: list[int] = []

    async def retry_once(event: DomainEvent) -> None:
        seen_async.append(event.retries)
        raise Retry(1.0)

    subscriber = make_async_subscriber()
    subscriber.register(retry_once, name, [f"{name}.#"], dead_letter=True, max_retries=3)

    async def first_attempt() -> None:
        await subscriber.declare()
        await apublish(f"{name}.x", {"n": 1}, connection_settings=broker_url)
        await run_until(subscriber, lambda: len(seen_async) == 1)

    asyncio.run(first_attempt())
    assert queue_depth(broker_url, f"{name}-wait-1000") == 1  # stored before the ack
    seen_sync: list[int] = []
    sync_subscriber = make_subscriber()  # type: ignore[operator]
    sync_subscriber.register(
        lambda event: seen_sync.append(event.retries),
        name,
        [f"{name}.#"],
        dead_letter=True,
        max_retries=3,
    )
    consume_until(sync_subscriber, lambda: len(seen_sync) == 1, settle=0.2)
    assert seen_async == [0] and seen_sync == [1]


def test_a_retry_started_sync_comes_back_counted_to_the_async_side(
    broker_url: str,
    name: str,
    make_async_subscriber: MakeAsyncSubscriber,
    make_subscriber: object,
) -> None:
    seen_sync: list[int] = []

    def retry_once(event: DomainEvent) -> None:
        seen_sync.append(event.retries)
        raise Retry(1.0)

    sync_subscriber = make_subscriber()  # type: ignore[operator]
    sync_subscriber.register(retry_once, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(sync_subscriber, lambda: len(seen_sync) == 1, settle=0.2)
    seen_async: list[int] = []

    async def record(event: DomainEvent) -> None:
        seen_async.append(event.retries)

    subscriber = make_async_subscriber()
    subscriber.register(record, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    asyncio.run(run_until(subscriber, lambda: len(seen_async) == 1, settle=0.2))
    assert seen_sync == [0] and seen_async == [1]


def test_async_dead_letters_are_replayed_by_replay_event_and_the_cli(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    calls: list[DomainEvent] = []

    async def crash(event: DomainEvent) -> None:
        calls.append(event)
        raise KeyError("no such user")

    subscriber = make_async_subscriber()
    subscriber.register(crash, name, [f"{name}.#"], dead_letter=True, max_retries=3)

    async def main() -> list[DomainEvent]:
        await subscriber.declare()
        sent = [
            await apublish(f"{name}.x", {"n": n}, connection_settings=broker_url) for n in range(2)
        ]
        await run_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 2, settle=0.2)
        return sent

    sent = asyncio.run(main())
    assert len(calls) == 2  # once each: a crash is no retry
    letters = replay.list_dead_letters(name, broker_url)
    assert [letter.event for letter in letters] == sent
    headers = get_all(broker_url, f"{name}-dl")[0][1].headers
    assert headers[FAILED_SUBSCRIBER_HEADER] == name
    assert headers[EXCEPTION_TYPE_HEADER] == "KeyError"
    assert headers[RETRIES_HEADER] == 0
    # get_all took them: publish again and dead-letter again, then replay both ways.
    calls.clear()
    asyncio.run(main())
    assert replay.replay_event(name, connection_settings=broker_url) == 1
    assert queue_depth(broker_url, name) == 1
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "domain_event_broker.cli",
            "--url",
            broker_url,
            "dead-letters",
            "replay",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert queue_depth(broker_url, name) == 2 and queue_depth(broker_url, f"{name}-dl") == 0


def test_bodies_that_are_not_events_are_dead_lettered_never_handled(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    called: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        called.append(event)

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True)
    bodies = [b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000]

    async def main() -> None:
        await subscriber.declare()
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            channel = connection.channel()
            for body in bodies:
                channel.basic_publish("domain-events", f"{name}.x", body)
        await run_until(
            subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == len(bodies), settle=0.2
        )

    asyncio.run(main())
    assert called == []
    assert queue_depth(broker_url, name) == 0
    assert sorted(body for _, _, body in get_all(broker_url, f"{name}-dl")) == sorted(bodies)


def test_base_exceptions_from_handlers_dead_letter_and_the_subscriber_lives_on(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    class Weird(BaseException):
        pass

    handled: list[int] = []

    async def handler(event: DomainEvent) -> None:
        if event.data["n"] == 0:
            raise Weird("odd")
        if event.data["n"] == 1:
            raise asyncio.CancelledError()  # cancelled inside, not by the subscriber
        handled.append(event.data["n"])

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True)

    async def main() -> None:
        await subscriber.declare()
        for n in range(3):
            await apublish(f"{name}.x", {"n": n}, connection_settings=broker_url)
        await run_until(
            subscriber,
            lambda: handled == [2] and queue_depth(broker_url, f"{name}-dl") == 2,
            settle=0.2,
        )

    asyncio.run(main())
    assert queue_depth(broker_url, name) == 0


def test_stop_lets_in_flight_handlers_finish_and_takes_no_new_events(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    started: list[int] = []
    finished: list[int] = []

    async def slow(event: DomainEvent) -> None:
        started.append(event.data["n"])
        await asyncio.sleep(1.0)
        finished.append(event.data["n"])

    subscriber = make_async_subscriber(prefetch_count=10, concurrency=2)
    subscriber.register(slow, name, [f"{name}.#"])

    async def main() -> None:
        await subscriber.declare()
        for n in range(10):
            await apublish(f"{name}.x", {"n": n}, connection_settings=broker_url)
        task = asyncio.create_task(subscriber.run())
        while len(started) < 2:
            await asyncio.sleep(0.01)
        await subscriber.stop()
        await task

    asyncio.run(main())
    assert sorted(finished) == sorted(started) == [0, 1]
    assert queue_depth(broker_url, name) == 8  # the rest went back, none lost


def test_a_subscriber_with_a_wrong_queue_type_gets_a_clear_error(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    from domain_event_broker.errors import TopologyMismatch

    async def handler(event: DomainEvent) -> None:
        pass

    first = make_async_subscriber()
    first.register(handler, name, [f"{name}.#"], dead_letter=False)
    second = AsyncSubscriber(broker_url, handle_signals=False)
    second.register(handler, name, [f"{name}.#"], dead_letter=True)

    async def main() -> None:
        await first.declare()
        await second.run()

    with pytest.raises(TopologyMismatch) as caught:
        asyncio.run(main())
    assert name in str(caught.value) and "x-dead-letter-exchange" in str(caught.value)


def test_the_in_memory_broker_takes_async_publishes() -> None:
    from domain_event_broker.testing import InMemoryBroker

    received: list[DomainEvent] = []
    with InMemoryBroker() as broker:
        broker.register(received.append, "mailer", ["user.*"])
        sent = asyncio.run(apublish("user.registered", {"id": 7}))
        broker.run()
    assert received == [sent]
    assert broker.published == [sent]


def test_stop_before_the_run_task_started_still_stops_it(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    async def handler(event: DomainEvent) -> None:
        pass

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"])

    async def main() -> None:
        task = asyncio.create_task(subscriber.run())
        await subscriber.stop()  # the task has not run a step yet
        await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_a_dead_letter_the_exchange_cannot_route_goes_straight_to_the_queue(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    async def crash(event: DomainEvent) -> None:
        raise ValueError("bad")

    subscriber = make_async_subscriber()
    subscriber.register(crash, name, [f"{name}.#"], dead_letter=True)

    async def main() -> None:
        task = asyncio.create_task(subscriber.run())
        while subscriber._session is None:  # consuming (its declarations are done)
            await asyncio.sleep(0.01)
        # an operator (or changed binding keys) left N-dlx without a binding for this key
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().queue_unbind(f"{name}-dl", f"{name}-dlx", f"{name}.#")
        await apublish(f"{name}.x", {}, connection_settings=broker_url)
        deadline = asyncio.get_running_loop().time() + 20
        while queue_depth(broker_url, f"{name}-dl") < 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await subscriber.stop()
        await task

    asyncio.run(main())
    [(_, properties, _)] = get_all(broker_url, f"{name}-dl")
    assert properties.headers[ROUTING_KEY_HEADER] == f"{name}.x"
    assert queue_depth(broker_url, name) == 0


def test_a_retry_whose_wait_queue_vanished_is_stored_in_a_new_one(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def retry(event: DomainEvent) -> None:
        seen.append(event.retries)
        if event.retries == 1:
            await gate.wait()  # the wait queue is empty now: the test deletes it
        if event.retries < 2:
            raise Retry(0.2)

    subscriber = make_async_subscriber()
    subscriber.register(retry, name, [f"{name}.#"], dead_letter=True, max_retries=5)

    async def main() -> None:
        await subscriber.declare()
        await apublish(f"{name}.x", {}, connection_settings=broker_url)
        task = asyncio.create_task(subscriber.run())
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        # the wait queue deleted behind the subscriber's back
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            channel = connection.channel()
            channel.queue_delete(f"{name}-wait-200")
        gate.set()
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await subscriber.stop()
        await task

    asyncio.run(main())
    assert seen == [0, 1, 2]
    assert queue_depth(broker_url, f"{name}-dl") == 0


def test_header_injectors_add_their_headers_to_async_publishes(broker_url: str, name: str) -> None:
    from domain_event_broker.observability import add_header_injector

    declare_plain_queue(broker_url, name, f"{name}.#")
    remove = add_header_injector(lambda key, message_id: {"traceparent": f"00-{message_id}"})
    try:
        event = asyncio.run(apublish(f"{name}.x", {}, connection_settings=broker_url))
        [(_, properties, _)] = get_all(broker_url, name)
        assert properties.headers == {"traceparent": f"00-{event.uuid_string}"}
    finally:
        remove()
        delete_topology(broker_url, name)
