"""Publishing: our confirmed publishes beside raw pika and aio-pika.

Every event is persistent, about 200 bytes, routed to a durable queue (purged
before each variant) so that the broker really stores it.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pika

from domain_event_broker import DomainEvent, Publisher, publish_domain_event
from domain_event_broker.publisher import close_shared_publishers

from .harness import (
    EXCHANGE,
    PERSISTENT,
    Context,
    Row,
    Series,
    event_body,
    event_data,
    interleave,
    unique,
)

ROUTING_KEY = "bench.published"
WINDOW = 500
THREADS = 8


class _Sink:
    """A durable queue that takes every published event, purged before each variant."""

    def __init__(self, context: Context) -> None:
        self.broker = context.broker
        self.name = unique("sink")
        self.broker.queue(self.name, ROUTING_KEY)

    def empty(self) -> None:
        self.broker.purge(self.name)

    def delete(self) -> None:
        self.broker.delete_queue(self.name)


# Ours -------------------------------------------------------------------------------------------
def ours_loop(url: str, count: int) -> float:
    """``publish_domain_event`` in a loop: each call returns once its event is confirmed."""
    publish_domain_event(ROUTING_KEY, event_data(ROUTING_KEY), connection_settings=url)  # connect
    started = time.perf_counter()
    for n in range(count):
        publish_domain_event(ROUTING_KEY, event_data(ROUTING_KEY, n), connection_settings=url)
    return count / (time.perf_counter() - started)


def ours_threads(url: str, count: int, threads: int = THREADS) -> float:
    """``threads`` threads calling ``publish_domain_event`` at once (one shared connection)."""
    publish_domain_event(ROUTING_KEY, event_data(ROUTING_KEY), connection_settings=url)  # connect
    each = count // threads
    barrier = threading.Barrier(threads + 1)

    def loop() -> None:
        barrier.wait()
        for n in range(each):
            publish_domain_event(ROUTING_KEY, event_data(ROUTING_KEY, n), connection_settings=url)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return each * threads / (time.perf_counter() - started)


def ours_many(url: str, count: int, window: int = WINDOW) -> float:
    """``Publisher.publish_many`` with ``window`` events per call (confirms pipelined)."""
    with Publisher(url) as publisher:
        started = time.perf_counter()
        for first in range(0, count, window):
            publisher.publish_many(
                DomainEvent(ROUTING_KEY, event_data(ROUTING_KEY, n))
                for n in range(first, min(count, first + window))
            )
        return count / (time.perf_counter() - started)


# Baselines ----------------------------------------------------------------------------------------
def pika_confirm_each(url: str, count: int) -> float:
    body = event_body(ROUTING_KEY)
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish(EXCHANGE, ROUTING_KEY, body, PERSISTENT)
        return count / (time.perf_counter() - started)


def pika_threads(url: str, count: int, threads: int = THREADS) -> float:
    """The same from raw pika: a connection per thread (pika's are not thread-safe)."""
    body = event_body(ROUTING_KEY)
    each = count // threads
    barrier = threading.Barrier(threads + 1)

    def loop() -> None:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            barrier.wait()
            for _ in range(each):
                channel.basic_publish(EXCHANGE, ROUTING_KEY, body, PERSISTENT)
            barrier.wait()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    barrier.wait()
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return each * threads / elapsed


def pika_no_confirms(url: str, count: int) -> float:
    body = event_body(ROUTING_KEY)
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish(EXCHANGE, ROUTING_KEY, body, PERSISTENT)
        return count / (time.perf_counter() - started)


def aio_pika_window(url: str, count: int, window: int = WINDOW) -> float:
    import aio_pika

    body = event_body(ROUTING_KEY)

    async def run() -> float:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE)
            started = time.perf_counter()
            for first in range(0, count, window):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                content_type="application/json",
                            ),
                            ROUTING_KEY,
                        )
                        for _ in range(min(window, count - first))
                    )
                )
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


# Cases --------------------------------------------------------------------------------------------
def case_publish_loop(context: Context) -> list[Row]:
    url = context.broker.url
    count = context.size(1500, 300)
    sink = _Sink(context)

    def run(function):  # type: ignore[no-untyped-def]
        def variant() -> float:
            sink.empty()
            return function(url, count)

        return variant

    try:
        samples = interleave(
            context,
            {
                "publish_domain_event loop": run(ours_loop),
                "pika confirm-each": run(pika_confirm_each),
            },
        )
    finally:
        close_shared_publishers()
        sink.delete()
    return [
        Row(
            "publish",
            "publish_domain_event loop (confirmed)",
            "events/s",
            Series("publish_domain_event", samples["publish_domain_event loop"]),
            Series("pika confirm-each", samples["pika confirm-each"]),
            "ratio>=",
            0.9,
            note=f"{count} events a round, one call after another; each returns once confirmed",
        )
    ]


def case_publish_many(context: Context) -> list[Row]:
    url = context.broker.url
    count = context.size(10000, 2000)
    sink = _Sink(context)

    def run(function):  # type: ignore[no-untyped-def]
        def variant() -> float:
            sink.empty()
            return function(url, count)

        return variant

    try:
        samples = interleave(
            context,
            {
                "publish_many": run(ours_many),
                "aio-pika window 500": run(aio_pika_window),
                "pika no confirms": run(pika_no_confirms),
            },
        )
    finally:
        sink.delete()
    ours = Series(f"Publisher.publish_many({WINDOW} events)", samples["publish_many"])
    return [
        Row(
            "publish",
            "publish_many, 500 a call",
            "events/s",
            ours,
            Series("aio-pika confirms, window 500", samples["aio-pika window 500"]),
            "ratio>=",
            1.0,
            note=f"{count} events a round, {WINDOW} events per publish_many call, confirms "
            "pipelined; aio-pika gathers 500 confirmed publishes at a time",
        ),
        Row(
            "publish",
            "publish_many vs no confirms",
            "events/s",
            ours,
            Series("pika, no confirms", samples["pika no confirms"]),
            "ratio>=",
            0.4,
        ),
    ]


def case_publish_threads(context: Context) -> list[Row]:
    url = context.broker.url
    count = context.size(4000, 800)
    loop_count = context.size(1500, 300)
    sink = _Sink(context)

    def variant(function, size):  # type: ignore[no-untyped-def]
        def run() -> float:
            sink.empty()
            return function(url, size)

        return run

    try:
        samples = interleave(
            context,
            {
                "8 threads publish_domain_event": variant(ours_threads, count),
                "8 threads pika confirm-each": variant(pika_threads, count),
                "1 thread publish_domain_event": variant(ours_loop, loop_count),
            },
        )
    finally:
        close_shared_publishers()
        sink.delete()
    ours = Series("8 threads, publish_domain_event", samples["8 threads publish_domain_event"])
    return [
        Row(
            "publish",
            "8 threads publish_domain_event",
            "events/s",
            ours,
            Series("8 threads pika, connection each", samples["8 threads pika confirm-each"]),
            note=f"{count} events a round over {THREADS} threads; ours share one connection "
            "(confirms pipelined), pika needs a connection per thread",
        ),
        Row(
            "publish",
            "8 threads vs 1 thread (ours)",
            "events/s",
            ours,
            Series("1 thread publish_domain_event", samples["1 thread publish_domain_event"]),
            "ratio>=",
            3.0,
        ),
    ]


CASES = {
    "publish_loop": case_publish_loop,
    "publish_many": case_publish_many,
    "publish_threads": case_publish_threads,
}
