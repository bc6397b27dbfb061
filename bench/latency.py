"""Latency from publish to handler at a steady 500 events/s.

This process publishes (each event carries the time of its publish call); a
child process consumes and notes, per event, how long ago that was. Ours:
``publish_domain_event`` to a default ``Subscriber``; raw pika: a confirmed
``basic_publish`` to a prefetch-100 consumer that parses the JSON body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pika

from domain_event_broker import publish_domain_event
from domain_event_broker.publisher import close_shared_publishers

from .consume import declare, forget
from .harness import (
    EXCHANGE,
    PERSISTENT,
    Context,
    Row,
    Series,
    children,
    event_data,
    interleave,
    now,
    unique,
)

ROUTING_KEY = "bench.latency"
#: p50 and p99 in milliseconds.
Pair = tuple[float, float]
#: A variant: (url, queue, events) to its p50 and p99.
Measured = Callable[[str, str, int], Pair]
Variant = Callable[[], float]
RATE = 500.0
WARM_UP = 100


def _paced(count: int, publish: Callable[[float], None]) -> None:
    interval = 1.0 / RATE
    due = now()
    for _ in range(count):
        due += interval
        publish(now())
        delay = due - now()
        if delay > 0:
            time.sleep(delay)


def _percentiles(latencies: list[float]) -> Pair:
    ordered = sorted(latencies[WARM_UP:])
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return pick(0.50), pick(0.99)


def _measured(
    role: str, url: str, name: str, count: int, publish_all: Callable[[int], None]
) -> Pair:
    """p50 and p99 of the child ``role`` consuming while ``publish_all(total)`` publishes."""
    total = WARM_UP + count
    arguments = {"url": url, "queue": name, "routing_key": ROUTING_KEY, "count": total}
    with children([(role, arguments)]) as (child,):
        child.ready()
        publish_all(total)
        latencies = child.result()["latencies"]
    return _percentiles(latencies)


def ours(url: str, name: str, count: int) -> Pair:
    def publish(sent: float) -> None:
        publish_domain_event(ROUTING_KEY, event_data(ROUTING_KEY, t=sent), connection_settings=url)

    def publish_all(total: int) -> None:
        publish(now())  # connects: one of the warm-up events
        time.sleep(0.3)  # the child starts its consumer
        _paced(total - 1, publish)

    return _measured("subscriber-latency", url, name, count, publish_all)


def _raw_template() -> dict[str, Any]:
    """An event as the raw publishers send it (the wire format's JSON), built once."""
    return {
        "routing_key": ROUTING_KEY,
        "data": event_data(ROUTING_KEY),
        "domain_object_id": None,
        "uuid_string": "00000000-0000-0000-0000-000000000000",
        "timestamp": time.time(),
    }


def _raw_body(template: dict[str, Any], sent: float) -> bytes:
    """The raw publishers' per-event work: the publish time in, the JSON out."""
    template["data"] = {**template["data"], "t": sent}
    return json.dumps(template).encode()


def raw(url: str, name: str, count: int) -> Pair:
    def publish_all(total: int) -> None:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            channel = connection.channel()
            channel.confirm_delivery()
            time.sleep(0.3)
            template = _raw_template()

            def publish(sent: float) -> None:
                body = _raw_body(template, sent)
                channel.basic_publish(EXCHANGE, ROUTING_KEY, body, PERSISTENT)

            _paced(total, publish)

    return _measured("pika-latency", url, name, count, publish_all)


async def _paced_async(count: int, publish: Callable[[float], Awaitable[None]]) -> None:
    interval = 1.0 / RATE
    due = now()
    for _ in range(count):
        due += interval
        await publish(now())
        delay = due - now()
        if delay > 0:
            await asyncio.sleep(delay)


def aio_ours(url: str, name: str, count: int) -> Pair:
    from domain_event_broker import aio

    async def publish(sent: float) -> None:
        data = event_data(ROUTING_KEY, t=sent)
        await aio.publish_domain_event(ROUTING_KEY, data, connection_settings=url)

    async def publish_all(total: int) -> None:
        try:
            await publish(now())  # connects: one of the warm-up events
            await asyncio.sleep(0.3)
            await _paced_async(total - 1, publish)
        finally:
            await aio.close_shared_publishers()

    return _measured(
        "async-subscriber-latency", url, name, count, lambda total: asyncio.run(publish_all(total))
    )


def aio_raw(url: str, name: str, count: int) -> Pair:
    import aio_pika

    template = _raw_template()

    async def publish_all(total: int) -> None:
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE)
            await asyncio.sleep(0.3)

            async def publish(sent: float) -> None:
                message = aio_pika.Message(
                    _raw_body(template, sent),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                )
                await exchange.publish(message, ROUTING_KEY)

            await _paced_async(total, publish)

    return _measured(
        "aio-pika-latency", url, name, count, lambda total: asyncio.run(publish_all(total))
    )


def case_latency(context: Context) -> list[Row]:
    return _latency_rows(
        context,
        ("publish_domain_event -> Subscriber", ours),
        ("pika confirmed -> pika consumer", raw),
        "latency",
    )


def case_aio_latency(context: Context) -> list[Row]:
    return _latency_rows(
        context,
        ("aio.publish_domain_event -> AsyncSubscriber", aio_ours),
        ("aio-pika confirmed -> aio-pika consumer", aio_raw),
        "asyncio",
    )


def _latency_rows(
    context: Context,
    ours_variant: tuple[str, Measured],
    raw_variant: tuple[str, Measured],
    group: str,
) -> list[Row]:
    ours_label, ours = ours_variant
    raw_label, raw = raw_variant
    url = context.broker.url
    count = context.size(1000, 300)
    name = unique("latency")
    declare(context.broker, name)
    # Bound before any variant runs: a raw consumer binds nothing, and an AsyncSubscriber
    # binds in run(), after its child said it was ready (its first events would be lost).
    with context.broker.connection() as connection:
        connection.channel().queue_bind(name, EXCHANGE, ROUTING_KEY)
    results: dict[str, list[Pair]] = {"ours": [], "pika": []}

    def run(key: str, function: Measured) -> Variant:
        def variant() -> float:
            context.broker.purge(name)
            p50, p99 = function(url, name, count)
            results[key].append((p50, p99))
            context.log(f"      p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            return p50

        return variant

    try:
        variants = {
            f"{ours_label}, p50": run("ours", ours),
            f"{raw_label}, p50": run("pika", raw),
        }
        interleave(context, variants, unit="ms")
    finally:
        close_shared_publishers()
        forget(context.broker, name)
    return [
        Row(
            group,
            f"publish -> handler {label} at {RATE:.0f}/s",
            "ms",
            Series(ours_label, [pair[index] for pair in results["ours"]]),
            Series(raw_label, [pair[index] for pair in results["pika"]]),
            "ratio<=",
            1.3,
            note=f"{count} events a round after {WARM_UP} warm-up ones; consumer in a child process"
            if index == 0
            else "",
        )
        for index, label in ((0, "p50"), (1, "p99"))
    ]


CASES = {"latency": case_latency, "aio-latency": case_aio_latency}
