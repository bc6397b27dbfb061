"""Ordered handling per domain object, through each driver, on the real broker.

``register(..., ordered_by="domain_object_id", partitions=N)``: the events of one
object are handled in publish order, never two at once; other objects go on in
parallel; a ``Retry`` holds the later events of its object; a dead letter lets
them continue and names its object.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pika
import pytest

from domain_event_broker import DomainEvent, Retry, replay_all
from domain_event_broker.core.topology import OBJECT_ID_HEADER
from drivers import Driver, Publishing
from support import get_all, queue_depth

Objects = dict[str, list[int]]


def concurrent(driver_kind: str, count: int) -> dict[str, int]:
    return {"workers": count} if driver_kind == "pika" else {"concurrency": count}


def publish_objects(publisher: Publishing, objects: int, events: int, key: str) -> None:
    """``events`` events of each of ``objects`` objects, interleaved, numbered per object."""
    batch = [
        DomainEvent(key, {"n": n}, domain_object_id=f"order-{o}")
        for n in range(events)
        for o in range(objects)
    ]
    assert all(outcome.confirmed for outcome in publisher.publish_batch(batch))


class Recorder:
    """What a handler saw: per object, the numbers in handling order; at most how many at once."""

    def __init__(self, driver: Driver, pause: float = 0.0) -> None:
        self.driver = driver
        self.pause = pause
        self.lock = threading.Lock()
        self.seen: Objects = defaultdict(list)
        self.running: set[str] = set()
        self.overlaps: list[str] = []  # an object handled twice at once
        self.most_at_once = 0

    def start(self, event: DomainEvent) -> None:
        object_id = str(event.domain_object_id)
        with self.lock:
            if object_id in self.running:
                self.overlaps.append(object_id)
            self.running.add(object_id)
            self.most_at_once = max(self.most_at_once, len(self.running))

    def end(self, event: DomainEvent) -> None:
        with self.lock:
            self.running.discard(str(event.domain_object_id))
            self.seen[str(event.domain_object_id)].append(event.data["n"])

    def handler(self, event: DomainEvent) -> object:
        self.start(event)
        if self.driver.kind == "pika":
            time.sleep(self.pause)
            self.end(event)
            return None

        async def handle() -> None:
            await self.driver.pause(self.pause)  # type: ignore[misc]
            self.end(event)

        return handle()

    def count(self) -> int:
        return sum(len(numbers) for numbers in self.seen.values())


def test_each_object_in_publish_order_and_objects_in_parallel(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    driver_kind: str,
    broker_url: str,
    name: str,
) -> None:
    driver = make_driver(prefetch_count=50, **concurrent(driver_kind, 8))
    recorder = Recorder(driver, pause=0.005)
    driver.register(
        recorder.handler, name, ["order.*"], ordered_by="domain_object_id", partitions=4
    )
    publish_objects(make_publishing(), objects=20, events=15, key="order.updated")
    driver.run_until(lambda: recorder.count() >= 300, timeout=60)

    assert recorder.overlaps == []
    assert dict(recorder.seen) == {f"order-{o}": list(range(15)) for o in range(20)}
    assert recorder.most_at_once > 1, "objects were handled one at a time"
    for partition in range(4):
        assert queue_depth(broker_url, f"{name}-p{partition:03d}") == 0


def test_a_retry_holds_the_later_events_of_its_object_only(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    driver_kind: str,
    name: str,
) -> None:
    driver = make_driver(prefetch_count=20, **concurrent(driver_kind, 4))
    handled: list[tuple[str, int, int]] = []  # (object, n, retries)
    retried_at: list[float] = []
    finished_at: dict[tuple[str, int], float] = {}

    def handler(event: DomainEvent) -> None:
        object_id, n = str(event.domain_object_id), event.data["n"]
        if object_id == "order-slow" and n == 0 and event.retries < 2:
            retried_at.append(time.monotonic())
            raise Retry(delay=0.6)
        handled.append((object_id, n, event.retries))
        finished_at[object_id, n] = time.monotonic()

    driver.register(
        handler, name, ["order.*"], ordered_by="domain_object_id", partitions=1, max_retries=3
    )
    publisher = make_publishing()
    batch = [DomainEvent("order.paid", {"n": n}, domain_object_id="order-slow") for n in range(3)]
    batch += [DomainEvent("order.paid", {"n": n}, domain_object_id="order-fast") for n in range(3)]
    assert all(outcome.confirmed for outcome in publisher.publish_batch(batch))
    driver.run_until(lambda: len(handled) >= 6, timeout=30)

    slow = [(n, retries) for object_id, n, retries in handled if object_id == "order-slow"]
    assert slow == [(0, 2), (1, 0), (2, 0)]  # the retried event first, after its 2 retries
    fast = [n for object_id, n, _ in handled if object_id == "order-fast"]
    assert fast == [0, 1, 2]
    # The other object went on while the retry waited: all of it before the retry came back.
    assert finished_at["order-fast", 2] < retried_at[-1] + 0.6
    assert len(retried_at) == 2


def test_a_dead_letter_lets_its_object_continue_and_names_it(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    broker_url: str,
    name: str,
) -> None:
    driver = make_driver(prefetch_count=4)
    handled: list[int] = []

    def handler(event: DomainEvent) -> None:
        if event.data["n"] == 1:
            raise ValueError("cannot ship a cancelled order")
        handled.append(event.data["n"])

    driver.register(
        handler, name, ["order.*"], ordered_by="domain_object_id", partitions=2, dead_letter=True
    )
    publisher = make_publishing()
    batch = [DomainEvent("order.shipped", {"n": n}, domain_object_id=42) for n in range(4)]
    assert all(outcome.confirmed for outcome in publisher.publish_batch(batch))
    driver.run_until(lambda: len(handled) >= 3, timeout=30)

    assert handled == [0, 2, 3]
    dead = get_all(broker_url, f"{name}-dl")
    assert len(dead) == 1
    _, properties, body = dead[0]
    assert properties.headers[OBJECT_ID_HEADER] == "42"
    assert json.loads(body)["domain_object_id"] == 42


def test_a_replayed_dead_letter_goes_back_to_its_objects_partition(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    broker_url: str,
    name: str,
) -> None:
    driver = make_driver()
    fixed = threading.Event()
    handled: list[tuple[object, int]] = []

    def handler(event: DomainEvent) -> None:
        if event.data["n"] == 1 and not fixed.is_set():
            raise ValueError("the bug, since fixed")
        handled.append((event.domain_object_id, event.data["n"]))

    driver.register(
        handler, name, ["order.*"], ordered_by="domain_object_id", partitions=3, dead_letter=True
    )
    publisher = make_publishing()
    batch = [DomainEvent("order.shipped", {"n": n}, domain_object_id=7) for n in range(3)]
    assert all(outcome.confirmed for outcome in publisher.publish_batch(batch))
    driver.run_until(lambda: len(handled) >= 2, timeout=30)
    assert queue_depth(broker_url, f"{name}-dl") == 1

    fixed.set()
    assert replay_all(name, connection_settings=broker_url) == 0
    driver.run_until(lambda: len(handled) >= 3, timeout=30)
    assert handled == [(7, 0), (7, 2), (7, 1)]
    assert queue_depth(broker_url, f"{name}-dl") == 0


def test_events_without_an_object_and_from_3x_publishers_are_handled(
    make_driver: Callable[..., Driver],
    make_publishing: Callable[..., Publishing],
    broker_url: str,
    name: str,
) -> None:
    driver = make_driver()
    handled: list[tuple[object, int]] = []
    driver.register(
        lambda event: handled.append((event.domain_object_id, event.data["n"])),
        name,
        ["order.*"],
        ordered_by="domain_object_id",
        partitions=4,
    )
    publisher = make_publishing()
    publisher.publish_event(DomainEvent("order.noted", {"n": 0}))
    # As the 3.x library publishes: the JSON body, persistent, no headers at all.
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in (1, 2):
            body = DomainEvent("order.noted", {"n": n}, domain_object_id="legacy-7").to_json()
            channel.basic_publish(
                "domain-events", "order.noted", body, pika.BasicProperties(delivery_mode=2)
            )
    driver.run_until(lambda: len(handled) >= 3, timeout=30)
    assert sorted(handled, key=lambda seen: seen[1]) == [
        (None, 0),
        ("legacy-7", 1),
        ("legacy-7", 2),
    ]


@pytest.mark.parametrize("partitions", [0, 257, "16", None])
def test_register_refuses_what_cannot_be_ordered(
    make_driver: Callable[..., Driver], name: str, partitions: object
) -> None:
    driver = make_driver()
    with pytest.raises(ValueError, match="partitions"):
        driver.register(
            lambda event: None,
            name,
            ["order.*"],
            ordered_by="domain_object_id",
            partitions=partitions,
        )


@pytest.mark.parametrize(
    "options",
    [{"exclusive": True}, {"auto_delete": True}, {"durable": False}, {"ordered_by": "uuid"}],
)
def test_register_refuses_ordered_options_that_do_not_fit(
    make_driver: Callable[..., Driver], name: str, options: dict[str, Any]
) -> None:
    driver = make_driver()
    options = {"ordered_by": "domain_object_id", "partitions": 4, **options}
    with pytest.raises(ValueError, match="ordered"):
        driver.register(lambda event: None, name, ["order.*"], **options)


def test_the_in_memory_broker_keeps_the_same_per_object_order() -> None:
    from domain_event_broker.testing import InMemoryBroker

    handled: list[tuple[str, int]] = []
    tried: set[int] = set()

    def handler(event: DomainEvent) -> None:
        n = event.data["n"]
        if event.domain_object_id == "slow" and n == 0 and n not in tried:
            tried.add(n)
            raise Retry(delay=30)
        if n == 2 and event.domain_object_id == "fast":
            raise ValueError("dead letter")
        handled.append((str(event.domain_object_id), n))

    with InMemoryBroker() as broker:
        broker.register(
            handler,
            "shipping",
            ["order.*"],
            dead_letter=True,
            max_retries=1,
            ordered_by="domain_object_id",
            partitions=4,
        )
        for n in range(4):
            broker.publish_domain_event("order.paid", {"n": n}, domain_object_id="slow")
            broker.publish_domain_event("order.paid", {"n": n}, domain_object_id="fast")
        broker.run()
        with pytest.raises(ValueError, match="partitions"):
            broker.register(handler, "other", ["order.*"], ordered_by="domain_object_id")
        assert [d.event.data["n"] for d in broker.dead_letters("shipping")] == [2]

    assert [n for obj, n in handled if obj == "slow"] == [0, 1, 2, 3]
    assert [n for obj, n in handled if obj == "fast"] == [0, 1, 3]
    # The other object went on while the retry waited.
    assert handled.index(("fast", 3)) < handled.index(("slow", 0))


def test_every_publish_path_carries_the_object_id_header_as_text(
    broker_url: str, channel: Any, name: str
) -> None:
    import asyncio

    from domain_event_broker import Publisher, publish_domain_event
    from domain_event_broker.aio import AsyncPublisher
    from domain_event_broker.core.messages import OutgoingMessage

    channel.exchange_declare("domain-events", "topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, "domain-events", "header.*")

    def event(path: str, object_id: object) -> DomainEvent:
        return DomainEvent(f"header.{path}", {}, domain_object_id=object_id)

    publish_domain_event("header.shared", {}, 42, connection_settings=broker_url)
    publisher = Publisher(broker_url)
    publisher.publish(event("publish", "42").to_json(), "header.publish")
    publisher.publish_many([event("many", 7), event("many", None)])
    publisher.publish_batch([OutgoingMessage.of_event(event("batch", "x"))])
    publisher.publish_batch([OutgoingMessage("header.raw", event("raw", 8).to_json().encode())])
    publisher.disconnect()

    async def aio() -> None:
        async with AsyncPublisher(broker_url) as aio_publisher:
            await aio_publisher.publish(event("aio", 5).to_json(), "header.aio")
            await aio_publisher.publish_event(event("aio-event", 6))

    asyncio.run(aio())
    headers = sorted(
        (method.routing_key, (properties.headers or {}).get(OBJECT_ID_HEADER, "none"))
        for method, properties, _ in get_all(broker_url, name)
    )
    assert headers == [
        ("header.aio", "5"),
        ("header.aio-event", "6"),
        ("header.batch", "x"),
        ("header.many", "7"),
        ("header.many", "none"),  # no id, no header
        ("header.publish", "42"),
        ("header.raw", "8"),
        ("header.shared", "42"),
    ]
    channel.queue_delete(name)
