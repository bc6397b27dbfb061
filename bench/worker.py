"""Child processes of the benchmarks: ``python -m bench.worker ROLE '{json arguments}'``.

A child connects, prints ``{"state": "ready"}``, waits for ``go`` on stdin,
does its part and prints one JSON line with its result. Times are
``time.monotonic()``, which every process on the machine shares.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pika

from domain_event_broker import DomainEvent, Publisher, Subscriber

from .harness import EXCHANGE, PERSISTENT, event_body, event_data, quiet_pika


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    say({"state": "ready"})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(0)


def peak_rss_mb() -> dict[str, float]:
    """Peak and current resident set size of this process, from /proc."""
    figures = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                figures[key] = int(value.split()[0]) / 1024
    return {"peak_rss_mb": figures["VmHWM"], "rss_mb": figures["VmRSS"]}


class _Idle:
    """Calls ``stop`` once ``count`` events were handled, or none came for ``idle`` seconds."""

    def __init__(self, idle: float, count: int | None, stop: Callable[[], None]) -> None:
        self.idle = idle
        self.count = count
        self.stop = stop
        self.handled = 0
        self.first = 0.0
        self.last = 0.0
        self.started = 0.0
        self._counter = itertools.count(1)

    def tick(self) -> int:
        handled = next(self._counter)  # atomic under the GIL, even with several workers
        self.last = time.monotonic()
        if handled == 1:
            self.first = self.last
        self.handled = handled
        if self.count is not None and handled >= self.count:
            self.stop()
        return handled

    def expired(self) -> bool:
        now = time.monotonic()
        if self.handled == 0:
            return now - self.started > 30.0
        return now - self.last > self.idle

    def result(self) -> dict[str, Any]:
        return {"handled": self.handled, "first": self.first, "last": self.last}


# Consumers --------------------------------------------------------------------------------------
def subscriber_drain(
    url: str,
    queue: str,
    routing_key: str,
    idle: float = 0.5,
    count: int | None = None,
    prefetch_count: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """A Subscriber with a no-op handler (default settings unless given)."""
    options: dict[str, Any] = {}
    if prefetch_count is not None:
        options["prefetch_count"] = prefetch_count
    if workers is not None:
        options["workers"] = workers
    subscriber = Subscriber(url, handle_signals=False, **options)
    progress = _Idle(idle, count, subscriber.stop_consuming)

    def handler(_event: DomainEvent) -> None:
        progress.tick()

    subscriber.register(handler, queue, [routing_key])
    wait_for_go()
    progress.started = time.monotonic()
    stopped = threading.Event()

    def watch() -> None:
        while not stopped.wait(0.05):
            if progress.expired():
                subscriber.stop_consuming()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    subscriber.start_consuming(timeout=300)
    stopped.set()
    return {**progress.result(), **peak_rss_mb()}


def pika_drain(
    url: str,
    queue: str,
    routing_key: str,
    idle: float = 0.5,
    count: int | None = None,
    prefetch_count: int = 100,
) -> dict[str, Any]:
    """Raw pika: prefetch 100, ack each message."""
    del routing_key  # the queue exists already
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch_count)
    progress = _Idle(idle, count, channel.stop_consuming)

    def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        progress.tick()

    def check() -> None:
        if progress.expired():
            channel.stop_consuming()
        else:
            connection.call_later(0.05, check)

    wait_for_go()
    progress.started = time.monotonic()
    channel.basic_consume(queue, on_message)
    connection.call_later(0.05, check)
    channel.start_consuming()
    connection.close()
    return {**progress.result(), **peak_rss_mb()}


def subscriber_latency(url: str, queue: str, routing_key: str, count: int) -> dict[str, Any]:
    """A Subscriber (default settings) noting, per event, now minus the time it was published."""
    subscriber = Subscriber(url, handle_signals=False)
    latencies: list[float] = []

    def handler(event: DomainEvent) -> None:
        latencies.append(time.monotonic() - event.data["t"])
        if len(latencies) >= count:
            subscriber.stop_consuming()

    subscriber.register(handler, queue, [routing_key])
    say({"state": "ready"})  # consumes at once: the publisher waits for this
    subscriber.start_consuming(timeout=300)
    return {"latencies": latencies}


def pika_latency(url: str, queue: str, routing_key: str, count: int) -> dict[str, Any]:
    """Raw pika (prefetch 100, ack each) noting, per event, now minus its publish time."""
    del routing_key
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    latencies: list[float] = []

    def on_message(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        latencies.append(time.monotonic() - json.loads(body)["data"]["t"])
        channel.basic_ack(method.delivery_tag)
        if len(latencies) >= count:
            channel.stop_consuming()

    channel.basic_consume(queue, on_message)
    say({"state": "ready"})
    channel.start_consuming()
    connection.close()
    return {"latencies": latencies}


def async_subscriber_latency(url: str, queue: str, routing_key: str, count: int) -> dict[str, Any]:
    """An AsyncSubscriber (default settings) noting, per event, now minus its publish time."""
    import asyncio

    from domain_event_broker.aio import AsyncSubscriber

    async def run() -> list[float]:
        subscriber = AsyncSubscriber(url, handle_signals=False)
        latencies: list[float] = []

        async def handler(event: DomainEvent) -> None:
            latencies.append(time.monotonic() - event.data["t"])
            if len(latencies) >= count:
                subscriber.request_stop()

        subscriber.register(handler, queue, [routing_key])
        say({"state": "ready"})
        await asyncio.wait_for(subscriber.run(), 300)
        return latencies

    return {"latencies": asyncio.run(run())}


def aio_pika_latency(url: str, queue: str, routing_key: str, count: int) -> dict[str, Any]:
    """Raw aio-pika (prefetch 100, ack each) noting, per event, now minus its publish time."""
    import asyncio

    import aio_pika

    del routing_key

    async def run() -> list[float]:
        latencies: list[float] = []
        done = asyncio.Event()
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=100)
            source = await channel.get_queue(queue, ensure=False)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                latencies.append(time.monotonic() - json.loads(message.body)["data"]["t"])
                await message.ack()
                if len(latencies) >= count:
                    done.set()

            await source.consume(on_message)
            say({"state": "ready"})
            await asyncio.wait_for(done.wait(), 300)
        return latencies

    return {"latencies": asyncio.run(run())}


# Publishers ---------------------------------------------------------------------------------------
def publisher_memory(url: str, routing_key: str, count: int, batch: int) -> dict[str, Any]:
    """``Publisher.publish_many`` of ``count`` events, ``batch`` per call."""
    with Publisher(url) as publisher:
        wait_for_go()
        started = time.monotonic()
        for first in range(0, count, batch):
            publisher.publish_many(
                DomainEvent(routing_key, event_data(routing_key, n))
                for n in range(first, min(count, first + batch))
            )
        elapsed = time.monotonic() - started
    return {"seconds": elapsed, **peak_rss_mb()}


def pika_publisher_memory(url: str, routing_key: str, count: int) -> dict[str, Any]:
    """Raw pika publishing ``count`` events without confirms."""
    body = event_body(routing_key)
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        wait_for_go()
        started = time.monotonic()
        for _ in range(count):
            channel.basic_publish(EXCHANGE, routing_key, body, PERSISTENT)
        elapsed = time.monotonic() - started
    return {"seconds": elapsed, **peak_rss_mb()}


ROLES: dict[str, Callable[..., dict[str, Any]]] = {
    "subscriber-drain": subscriber_drain,
    "pika-drain": pika_drain,
    "subscriber-latency": subscriber_latency,
    "pika-latency": pika_latency,
    "async-subscriber-latency": async_subscriber_latency,
    "aio-pika-latency": aio_pika_latency,
    "publisher-memory": publisher_memory,
    "pika-publisher-memory": pika_publisher_memory,
}


def main() -> None:
    quiet_pika()
    role, arguments = sys.argv[1], json.loads(sys.argv[2])
    say(ROLES[role](**arguments))


if __name__ == "__main__":
    main()
