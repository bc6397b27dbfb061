"""Ordered handling: throughput of 1, 2 and 4 processes of one ordered subscriber.

The handler costs 2 ms of sleep (I/O-bound, as most handlers are). Beside it: an
unordered ``Subscriber`` with the same handler, and raw pika with
``prefetch_count=1`` (the only way to keep order without ordered handling). Each
variant drains a backlog of events of 200 objects put in beforehand (not timed);
the clock runs from the first event handled in any process to the last.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pika

from domain_event_broker import DomainEvent, Publisher, Subscriber

from .harness import Broker, Context, Row, Series, interleave, median, unique

ROUTING_KEY = "bench.ordered"
HANDLER_SECONDS = 0.002
OBJECTS = 200
PARTITIONS = 16
#: Handler threads of the ordered and the unordered Subscriber alike: 4, so that one
#: process is bound by its handlers (4 x 2 ms), as a process that needs more processes
#: beside it is. With 16, one process is CPU-bound on a 2-core machine (5,871/s, 14x raw
#: pika, on a quiet machine) and more processes cannot add much: 2 and 4 processes gave
#: 9,023/s and 8,095/s there.
WORKERS = 4
PREFETCH = 128


def _fill(url: str, count: int) -> None:
    publisher = Publisher(url)
    try:
        events = [
            DomainEvent(ROUTING_KEY, {"n": n}, domain_object_id=f"object-{n % OBJECTS}")
            for n in range(count)
        ]
        publisher.publish_many(events)
    finally:
        publisher.disconnect()


def _consume(url: str, name: str, ordered: bool, count: int, total: Any, results: Any) -> None:
    """One subscriber process: drains until ``total`` (shared by the processes) reaches
    ``count``; puts (handled, first, last) in ``results``."""
    subscriber = Subscriber(url, handle_signals=False, workers=WORKERS, prefetch_count=PREFETCH)
    times: list[float] = []

    def handler(_event: DomainEvent) -> None:
        time.sleep(HANDLER_SECONDS)
        times.append(time.monotonic())
        with total.get_lock():
            total.value += 1

    options: dict[str, Any] = (
        {"ordered_by": "domain_object_id", "partitions": PARTITIONS} if ordered else {}
    )
    subscriber.register(handler, name, [ROUTING_KEY], **options)

    def idle_watch() -> None:
        while total.value < count:
            time.sleep(0.05)
        subscriber.stop_consuming()

    import threading

    threading.Thread(target=idle_watch, daemon=True).start()
    subscriber.start_consuming(timeout=300)
    results.put((len(times), times[0] if times else 0.0, times[-1] if times else 0.0))


def _drain(url: str, name: str, count: int, processes: int, ordered: bool) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    total = context.Value("i", 0)
    children = [
        context.Process(target=_consume, args=(url, name, ordered, count, total, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    # Every process consuming its share before the backlog comes: a process listens for
    # the others 1.25 s, and a share that shrank is handed over (docs/ordered.md); the
    # spawned processes start a second or more apart. After 4 s, a process could still
    # hold more than its share and finish last (4 processes: 2.8x one, against 3.4x).
    time.sleep(10.0)
    _fill(url, count)
    figures = [results.get(timeout=300) for _ in children]
    for child in children:
        child.join(30)
    handled = sum(handled for handled, _, _ in figures)
    if handled < count:
        raise RuntimeError(f"{processes} processes handled {handled} of {count} events")
    first = min(first for n, first, _ in figures if n)
    last = max(last for n, _, last in figures if n)
    return handled / (last - first)


def _pika_prefetch_one(url: str, name: str, count: int) -> float:
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", ROUTING_KEY)
        channel.basic_qos(prefetch_count=1)
        _fill(url, count)
        times: list[float] = []

        def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
            time.sleep(HANDLER_SECONDS)
            channel.basic_ack(method.delivery_tag)
            times.append(time.monotonic())
            if len(times) == count:
                channel.stop_consuming()

        channel.basic_consume(name, on_message)
        channel.start_consuming()
        channel.queue_delete(name)
    return count / (times[-1] - times[0])


def case_ordered(context: Context) -> list[Row]:
    broker: Broker = context.broker
    count = context.size(6000, 2000)
    ordered_name, plain_name, raw_name = unique("ordered"), unique("unordered"), unique("raw")
    variants = {
        f"ordered x{processes}": lambda processes=processes: _drain(
            broker.url, ordered_name, count, processes, True
        )
        for processes in (1, 2, 4)
    }
    variants["unordered x1"] = lambda: _drain(broker.url, plain_name, count, 1, False)
    variants["pika prefetch 1"] = lambda: _pika_prefetch_one(broker.url, raw_name, count // 4)
    samples = interleave(context, variants)
    note = f"{count} events of {OBJECTS} objects, {WORKERS} handler threads per process"
    one = Series(f"1 x Subscriber ordered ({PARTITIONS} partitions)", samples["ordered x1"])
    return [
        Row(
            "ordered",
            "ordered, 1 process, 2 ms handler",
            "events/s",
            one,
            Series("pika prefetch 1, same handler", samples["pika prefetch 1"]),
            "ratio>=",
            4.0,
            note=f"{note}; unordered Subscriber x1: {median(samples['unordered x1']):.0f}/s",
        ),
        *(
            Row(
                "ordered",
                f"ordered, {processes} processes, 2 ms handler",
                "events/s",
                Series(f"{processes} x Subscriber ordered", samples[f"ordered x{processes}"]),
                one,
                "ratio>=",
                target,
                note=note,
            )
            for processes, target in ((2, 1.5), (4, 3.0))
        ),
    ]


CASES = {"ordered": case_ordered}
