"""asyncio: our AsyncPublisher and AsyncSubscriber beside raw aio-pika, in the same run.

Publishing: persistent 200-byte events to a durable queue (purged before each
variant), confirm-each and pipelined with a window of 500. Consuming: a backlog
put in the queue beforehand (not timed) drained by a no-op handler.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from domain_event_broker import DomainEvent
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber
from domain_event_broker.subscriber import PREFETCH_COUNT

from .consume import ROUTING_KEY as CONSUMED_KEY
from .consume import declare, filled, forget
from .harness import EXCHANGE, Context, Row, Series, event_body, event_data, interleave, unique
from .publish import ROUTING_KEY, WINDOW, _Sink


# Publishing -------------------------------------------------------------------------------------
def ours_each(url: str, count: int) -> float:
    async def run() -> float:
        async with AsyncPublisher(url) as publisher:
            events = [DomainEvent(ROUTING_KEY, event_data(ROUTING_KEY)) for _ in range(count)]
            started = time.perf_counter()
            for event in events:
                await publisher.publish_event(event)
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def ours_window(url: str, count: int) -> float:
    async def run() -> float:
        async with AsyncPublisher(url) as publisher:
            events = [DomainEvent(ROUTING_KEY, event_data(ROUTING_KEY)) for _ in range(count)]
            started = time.perf_counter()
            for first in range(0, count, WINDOW):
                outcomes = await publisher.publish_many(events[first : first + WINDOW])
                if not all(outcome.confirmed for outcome in outcomes):
                    raise RuntimeError("an event was not confirmed")
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def _aio_pika_message(body: bytes) -> Any:
    import aio_pika

    return aio_pika.Message(
        body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, content_type="application/json"
    )


def aio_pika_each(url: str, count: int) -> float:
    import aio_pika

    body = event_body(ROUTING_KEY)

    async def run() -> float:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE)
            started = time.perf_counter()
            for _ in range(count):
                await exchange.publish(_aio_pika_message(body), ROUTING_KEY)
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def aio_pika_window(url: str, count: int) -> float:
    from .publish import aio_pika_window as window

    return window(url, count, WINDOW)


# Consuming --------------------------------------------------------------------------------------
def ours_drain(url: str, name: str, count: int) -> float:
    async def run() -> float:
        subscriber = AsyncSubscriber(url, handle_signals=False)
        counter = itertools.count(1)
        finished = [0.0]

        async def handler(_event: DomainEvent) -> None:
            if next(counter) == count:
                finished[0] = time.perf_counter()
                subscriber.request_stop()

        subscriber.register(handler, name, [CONSUMED_KEY])
        started = time.perf_counter()
        await asyncio.wait_for(subscriber.run(), 300)
        if not finished[0]:
            raise RuntimeError(f"the subscriber did not handle {count} events")
        return count / (finished[0] - started)

    return asyncio.run(run())


def aio_pika_drain(url: str, name: str, count: int) -> float:
    import aio_pika

    async def run() -> float:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH_COUNT)
            queue = await channel.get_queue(name, ensure=False)
            done = asyncio.Event()
            counter = itertools.count(1)
            finished = [0.0]

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                DomainEvent.from_json(message.body)  # decoding is part of the work
                await message.ack()
                if next(counter) == count:
                    finished[0] = time.perf_counter()
                    done.set()

            started = time.perf_counter()
            tag = await queue.consume(on_message)
            await asyncio.wait_for(done.wait(), 300)
            await queue.cancel(tag)
            return count / (finished[0] - started)

    return asyncio.run(run())


# Cases ------------------------------------------------------------------------------------------
def case_aio_publish(context: Context) -> list[Row]:
    url = context.broker.url
    each = context.size(1500, 300)
    many = context.size(10000, 2000)
    sink = _Sink(context)

    def run(function, count):  # type: ignore[no-untyped-def]
        def variant() -> float:
            sink.empty()
            return function(url, count)

        return variant

    try:
        samples = interleave(
            context,
            {
                "ours each": run(ours_each, each),
                "aio-pika each": run(aio_pika_each, each),
                "ours window": run(ours_window, many),
                "aio-pika window": run(aio_pika_window, many),
            },
        )
    finally:
        sink.delete()
    return [
        Row(
            "asyncio",
            "AsyncPublisher, confirm each",
            "events/s",
            Series("await publish_event(), one after another", samples["ours each"]),
            Series("aio-pika publish, confirm each", samples["aio-pika each"]),
            "ratio>=",
            0.9,
            note=f"{each} events a round, each awaited until confirmed",
        ),
        Row(
            "asyncio",
            "AsyncPublisher.publish_many, window 500",
            "events/s",
            Series(f"publish_many({WINDOW} events)", samples["ours window"]),
            Series("aio-pika, gather 500 confirmed publishes", samples["aio-pika window"]),
            "ratio>=",
            0.9,
            note=f"{many} events a round, {WINDOW} at a time, confirms pipelined",
        ),
    ]


def case_aio_consume(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("aio-consume")
    declare(broker, name)
    try:
        samples = interleave(
            context,
            {
                "AsyncSubscriber": filled(broker, name, count, ours_drain),
                "aio-pika": filled(broker, name, count, aio_pika_drain),
            },
        )
    finally:
        forget(broker, name)
    return [
        Row(
            "asyncio",
            "AsyncSubscriber, no-op handler, defaults",
            "events/s",
            Series(
                f"AsyncSubscriber(prefetch {PREFETCH_COUNT}, concurrency 1)",
                samples["AsyncSubscriber"],
            ),
            Series(f"aio-pika prefetch {PREFETCH_COUNT}, decode, ack each", samples["aio-pika"]),
            "ratio>=",
            0.9,
            note=f"draining a backlog of {count} events",
        )
    ]


CASES = {"aio-publish": case_aio_publish, "aio-consume": case_aio_consume}
