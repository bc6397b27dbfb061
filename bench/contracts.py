"""Typed events (a dataclass contract) beside untyped ones: what checking costs at each end.

Both variants use the same public calls (``Publisher.publish_event``; a
Subscriber draining a backlog), so the ratio is the cost of validation,
building the dataclass and the version header. Target: typed at most 15 %
slower (ratio >= 0.85).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from domain_event_broker import DomainEvent, Publisher, Subscriber
from domain_event_broker.contracts import event_type

from . import consume, publish
from .harness import Context, Row, Series, event_data, interleave, unique


@dataclass
class BenchData:
    """The shape of the bench's event data (``harness.event_data``)."""

    n: int
    t: float
    pad: str


Published = event_type(publish.ROUTING_KEY, BenchData)
Consumed = event_type(consume.ROUTING_KEY, BenchData)


def publish_alternating(url: str, count: int) -> tuple[float, float]:
    """(typed, untyped) events/s of ``Publisher.publish_event``, each confirmed, the two kinds
    alternating on one publisher: a shared machine's load drifts alike for both."""
    key = publish.ROUTING_KEY
    spent = {True: 0.0, False: 0.0}
    with Publisher(url) as publisher:
        publisher.publish_event(Published(BenchData(**event_data(key))))  # connected, warm
        for n in range(count):
            typed = n % 2 == 1
            data = event_data(key, n)
            started = time.perf_counter()
            if typed:
                publisher.publish_event(Published(BenchData(**data)))
            else:
                publisher.publish_event(DomainEvent(key, data))
            spent[typed] += time.perf_counter() - started
    half = count / 2
    return half / spent[True], half / spent[False]


def drain(url: str, name: str, count: int, typed: bool) -> float:
    """A Subscriber with a handler that reads one field, typed or untyped."""
    subscriber = Subscriber(url, handle_signals=False)
    counter = itertools.count(1)
    finished = [0.0]
    seen = [0]

    def untyped(event: DomainEvent) -> None:
        seen[0] += event.data["n"] >= 0
        if next(counter) == count:
            finished[0] = time.perf_counter()
            subscriber.stop_consuming()

    def handler(event: Any) -> None:
        seen[0] += event.data.n >= 0
        if next(counter) == count:
            finished[0] = time.perf_counter()
            subscriber.stop_consuming()

    if typed:
        subscriber.register(handler, name, [Consumed])
    else:
        subscriber.register(untyped, name, [consume.ROUTING_KEY])
    started = time.perf_counter()
    subscriber.start_consuming(timeout=300)
    if not finished[0]:
        raise RuntimeError(f"the subscriber did not handle {count} events")
    return count / (finished[0] - started)


def case_contracts_publish(context: Context) -> list[Row]:
    url = context.broker.url
    count = context.size(3000, 600)
    sink = unique("contracts-sink")  # a durable queue takes every event: the broker stores it
    context.broker.queue(sink, publish.ROUTING_KEY)
    typed: list[float] = []
    untyped: list[float] = []
    try:
        for number in range(context.rounds):
            context.broker.purge(sink)
            rates = publish_alternating(url, count)
            typed.append(rates[0])
            untyped.append(rates[1])
            context.log(
                f"    round {number + 1}: typed {rates[0]:,.0f}/s, untyped {rates[1]:,.0f}/s"
            )
    finally:
        context.broker.delete_queue(sink)
    return [
        Row(
            "contracts",
            "publish_event, typed (dataclass) vs untyped",
            "events/s",
            Series("typed publish_event", typed),
            Series("untyped publish_event", untyped),
            "ratio>=",
            0.85,
            note=f"{count} confirmed publishes a round on one publisher, typed and untyped "
            "alternating; each rate from the time spent in its own calls",
        )
    ]


def case_contracts_consume(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    name = unique("contracts")
    consume.declare(broker, name)

    def variant(typed: bool):  # type: ignore[no-untyped-def]
        def run() -> float:
            broker.fill(name, consume.ROUTING_KEY, count)
            return drain(broker.url, name, count, typed)

        return run

    try:
        samples = interleave(context, {"typed": variant(True), "untyped": variant(False)})
    finally:
        consume.forget(broker, name)
    return [
        Row(
            "contracts",
            "consume, typed handler (dataclass) vs untyped",
            "events/s",
            Series("typed handler", samples["typed"]),
            Series("untyped handler", samples["untyped"]),
            "ratio>=",
            0.85,
            note=f"draining a backlog of {count} events; each body checked and built "
            "into the dataclass",
        )
    ]


CASES = {
    "contracts_publish": case_contracts_publish,
    "contracts_consume": case_contracts_consume,
}
