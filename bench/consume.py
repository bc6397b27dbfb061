"""Consuming: a Subscriber draining a backlog beside raw pika, the retry path, and scaling out.

Each variant drains a backlog put in the queue beforehand (not timed); the clock
runs from the start of consuming until the last event was handled.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pika

from domain_event_broker import DomainEvent, Retry, Subscriber
from domain_event_broker.subscriber import PREFETCH_COUNT, WORKERS
from domain_event_broker.topology import RETRIES_HEADER, ROUTING_KEY_HEADER, SubscriberTopology

from .harness import Broker, Context, Row, Series, children, interleave, median, now, unique

ROUTING_KEY = "bench.consumed"


def declare(broker: Broker, name: str) -> SubscriberTopology:
    """The queue of subscriber ``name``, declared as the library declares it."""
    topology = SubscriberTopology(name, (ROUTING_KEY,))
    with broker.connection() as connection:
        topology.declare(connection.channel())
    return topology


def forget(broker: Broker, name: str) -> None:
    with broker.connection() as connection:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(f"{name}-retry")


# In-process drains ------------------------------------------------------------------------------
def ours_drain(
    url: str, name: str, count: int, handler_seconds: float = 0.0, **options: Any
) -> float:
    """A Subscriber with a no-op handler (or one that sleeps ``handler_seconds``, as
    if waiting for I/O); ``options`` go to ``Subscriber(...)``."""
    subscriber = Subscriber(url, handle_signals=False, **options)
    counter = itertools.count(1)
    finished = [0.0]

    def handler(_event: DomainEvent) -> None:
        if handler_seconds:
            time.sleep(handler_seconds)
        if next(counter) == count:
            finished[0] = time.perf_counter()
            subscriber.stop_consuming()

    subscriber.register(handler, name, [ROUTING_KEY])
    started = time.perf_counter()
    subscriber.start_consuming(timeout=300)
    if not finished[0]:
        raise RuntimeError(f"the subscriber did not handle {count} events")
    return count / (finished[0] - started)


def pika_drain(url: str, name: str, count: int, prefetch_count: int = 100) -> float:
    """Raw pika, ``prefetch_count`` 100, acking each message."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch_count)
        handled = 0
        finished = 0.0

        def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
            nonlocal handled, finished
            channel.basic_ack(method.delivery_tag)
            handled += 1
            if handled == count:
                finished = time.perf_counter()
                channel.stop_consuming()

        started = time.perf_counter()
        channel.basic_consume(name, on_message)
        channel.start_consuming()
    return count / (finished - started)


def ours_retry(url: str, name: str, count: int) -> float:
    """Every event raises ``Retry(0)`` once, then is handled: ``count`` events through it."""
    subscriber = Subscriber(url, handle_signals=False)
    counter = itertools.count(1)
    finished = [0.0]

    def handler(event: DomainEvent) -> None:
        if event.retries == 0:
            raise Retry(0)
        if next(counter) == count:
            finished[0] = time.perf_counter()
            subscriber.stop_consuming()

    subscriber.register(handler, name, [ROUTING_KEY], max_retries=1)
    started = time.perf_counter()
    subscriber.start_consuming(timeout=300)
    if not finished[0]:
        raise RuntimeError(f"the subscriber did not handle {count} retried events")
    return count / (finished[0] - started)


def pika_retry(url: str, name: str, count: int) -> float:
    """Raw pika doing the same steps: publish a confirmed copy to the wait queue, then ack."""
    topology = SubscriberTopology(name, (ROUTING_KEY,))
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        publish = connection.channel()
        publish.confirm_delivery()
        topology.declare_wait_queue(publish, 0, time.monotonic())
        # Copies go through the default exchange straight into the wait queue, as ours do.
        wait_exchange, wait_key = topology.retry_destination(0)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        handled = 0
        finished = 0.0

        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            nonlocal handled, finished
            if not (properties.headers or {}).get(RETRIES_HEADER):
                copy = pika.BasicProperties(
                    delivery_mode=2,
                    content_type=properties.content_type,
                    headers={
                        **(properties.headers or {}),
                        RETRIES_HEADER: 1,
                        ROUTING_KEY_HEADER: method.routing_key,
                    },
                )
                publish.basic_publish(wait_exchange, wait_key, body, copy, mandatory=True)
                channel.basic_ack(method.delivery_tag)
                return
            channel.basic_ack(method.delivery_tag)
            handled += 1
            if handled == count:
                finished = time.perf_counter()
                channel.stop_consuming()

        started = time.perf_counter()
        channel.basic_consume(name, on_message)
        channel.start_consuming()
    return count / (finished - started)


def filled(
    broker: Broker, name: str, count: int, drain: Callable[..., float], **options: Any
) -> Callable[[], float]:
    """A variant that puts ``count`` events in the backlog (not timed), then drains them."""

    def variant() -> float:
        broker.fill(name, ROUTING_KEY, count)
        return drain(broker.url, name, count, **options)

    return variant


# Cases --------------------------------------------------------------------------------------------
def case_consume(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("consume")
    declare(broker, name)
    try:
        samples = interleave(
            context,
            {
                "Subscriber default": filled(broker, name, count, ours_drain),
                "pika prefetch 100": filled(broker, name, count, pika_drain),
            },
        )
    finally:
        forget(broker, name)
    return [
        Row(
            "consume",
            "Subscriber, no-op handler, defaults",
            "events/s",
            Series(
                f"Subscriber(prefetch {PREFETCH_COUNT}, workers {WORKERS})",
                samples["Subscriber default"],
            ),
            Series("pika prefetch 100, ack each", samples["pika prefetch 100"]),
            "ratio>=",
            0.8,
            note=f"draining a backlog of {count} events",
        )
    ]


def case_retry(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(1500, 300)
    name = unique("retry")
    declare(broker, name)
    try:
        samples = interleave(
            context,
            {
                "Retry(0) once each": filled(broker, name, count, ours_retry),
                "pika same steps": filled(broker, name, count, pika_retry),
            },
        )
    finally:
        forget(broker, name)
    return [
        Row(
            "consume",
            "retry path: Retry(0) once each",
            "events/s",
            Series("Subscriber, max_retries=1", samples["Retry(0) once each"]),
            Series("pika: confirmed copy to wait queue, ack", samples["pika same steps"]),
            note=f"{count} events, each delivered twice: the first raises Retry(0), its delayed "
            "copy is stored (confirmed) before the ack, and comes back through the wait queue",
        )
    ]


def _drain_processes(broker: Broker, name: str, count: int, processes: int, role: str) -> float:
    arguments = {"url": broker.url, "queue": name, "routing_key": ROUTING_KEY, "idle": 0.3}
    with children([(role, arguments)] * processes) as started:
        broker.fill(name, ROUTING_KEY, count)
        for child in started:
            child.ready()
        go = now()
        for child in started:
            child.go()
        results = [child.result() for child in started]
    handled = sum(result["handled"] for result in results)
    if handled < count:
        raise RuntimeError(f"{processes} {role} processes handled {handled} of {count} events")
    return handled / (max(result["last"] for result in results) - go)


def case_scaling(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("scale")
    declare(broker, name)
    variants = {}
    for processes in (1, 2, 4):
        for role, label in (("subscriber-drain", "Subscriber"), ("pika-drain", "pika")):
            variants[f"{label} x{processes}"] = lambda processes=processes, role=role: (
                _drain_processes(broker, name, count, processes, role)
            )
    try:
        samples = interleave(context, variants)
    finally:
        forget(broker, name)
    rows = []
    single = median(samples["Subscriber x1"])
    for processes in (1, 2, 4):
        ours = samples[f"Subscriber x{processes}"]
        rows.append(
            Row(
                "consume",
                f"{processes} subscriber process{'es' if processes > 1 else ''}, one queue",
                "events/s",
                Series(f"{processes} x Subscriber (defaults)", ours),
                Series(f"{processes} x pika prefetch 100", samples[f"pika x{processes}"]),
                note=f"{median(ours) / single:.2f}x one process; {count} events backlog, "
                "clock from go to the last event handled in any process",
            )
        )
    return rows


def case_defaults(context: Context) -> list[Row]:
    """Sweep prefetch_count and workers (no-op and 1 ms handlers) to choose the defaults."""
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("defaults")
    declare(broker, name)
    slow = count // 10  # events for the handlers that wait 1 ms each
    variants = {"pika prefetch 100": filled(broker, name, count, pika_drain)}
    for prefetch in (1, 10, 32, 64, 100, 250, 1000):
        variants[f"prefetch {prefetch}"] = filled(
            broker, name, count, ours_drain, prefetch_count=prefetch
        )
    for workers in (2, 4):
        variants[f"workers {workers}"] = filled(broker, name, count, ours_drain, workers=workers)
    for workers in (1, 4, 16):
        variants[f"workers {workers}, 1 ms handler"] = filled(
            broker, name, slow, ours_drain, handler_seconds=0.001, workers=workers
        )
    try:
        samples = interleave(context, variants)
    finally:
        forget(broker, name)
    baseline = Series("pika prefetch 100, ack each", samples.pop("pika prefetch 100"))
    return [
        Row(
            "defaults",
            f"Subscriber {label}",
            "events/s",
            Series(f"Subscriber {label}", values),
            baseline,
            note="the other setting at its default"
            + ("; the handler sleeps 1 ms (waits for I/O)" if "1 ms" in label else ""),
        )
        for label, values in samples.items()
    ]


CASES = {
    "consume": case_consume,
    "retry": case_retry,
    "scaling": case_scaling,
    "defaults": case_defaults,
}
OPTIONAL = ("defaults",)
