"""Memory: peak RSS (VmHWM) of a subscriber draining a backlog, and of a publisher.

Each figure comes from a child process of its own, so that nothing this process
did earlier counts. RSS barely varies between rounds: one sample each.
"""

from __future__ import annotations

from typing import Any

from .consume import ROUTING_KEY, declare, forget
from .harness import Broker, Context, Row, Series, children, unique

PUBLISHER_KEY = "bench.memory"


def _drain(broker: Broker, role: str, backlog: int) -> dict[str, Any]:
    name = unique("memory")
    declare(broker, name)
    arguments = {
        "url": broker.url,
        "queue": name,
        "routing_key": ROUTING_KEY,
        "count": backlog,
        "idle": 5.0,
    }
    try:
        with children([(role, arguments)]) as (child,):
            broker.fill(name, ROUTING_KEY, backlog)
            child.ready()
            child.go()
            result = child.result()
    finally:
        forget(broker, name)
    if result["handled"] < backlog:
        raise RuntimeError(f"{role} handled {result['handled']} of {backlog} events")
    return result


def _publish(broker: Broker, role: str, arguments: dict[str, Any]) -> dict[str, Any]:
    sink = unique("memory-sink")
    broker.queue(sink, PUBLISHER_KEY)
    try:
        with children([(role, {"url": broker.url, "routing_key": PUBLISHER_KEY, **arguments})]) as (
            child,
        ):
            child.ready()
            child.go()
            return child.result()
    finally:
        broker.delete_queue(sink)


def case_memory(context: Context) -> list[Row]:
    broker = context.broker
    small, large = 1000, context.size(100_000, 10_000)
    log = context.log

    def drained(role: str, backlog: int) -> float:
        result = _drain(broker, role, backlog)
        log(f"    {role}, backlog {backlog}: peak RSS {result['peak_rss_mb']:.1f} MB")
        return float(result["peak_rss_mb"])

    ours_small = drained("subscriber-drain", small)
    pika_small = drained("pika-drain", small)
    ours_large = drained("subscriber-drain", large)
    pika_large = drained("pika-drain", large)

    def published(role: str, **arguments: Any) -> float:
        result = _publish(broker, role, {"count": large, **arguments})
        log(
            f"    {role} {arguments}: {large} events in {result['seconds']:.1f} s, "
            f"peak RSS {result['peak_rss_mb']:.1f} MB"
        )
        return float(result["peak_rss_mb"])

    ours_batches = published("publisher-memory", batch=1000)
    ours_one_batch = published("publisher-memory", batch=large)
    pika_publisher = published("pika-publisher-memory")
    return [
        Row(
            "memory",
            f"subscriber peak RSS, backlog {small:,}",
            "MB",
            Series("Subscriber (defaults)", [ours_small]),
            Series("pika prefetch 100", [pika_small]),
        ),
        Row(
            "memory",
            f"subscriber peak RSS, backlog {large:,}",
            "MB",
            Series("Subscriber (defaults)", [ours_large]),
            Series("pika prefetch 100", [pika_large]),
        ),
        Row(
            "memory",
            f"subscriber RSS growth {small:,} -> {large:,}",
            "MB",
            Series("Subscriber (defaults)", [ours_large - ours_small]),
            Series("pika prefetch 100", [pika_large - pika_small]),
            "abs<=",
            20.0,
            note="prefetch bounds what a subscriber holds, whatever the backlog",
        ),
        Row(
            "memory",
            f"publisher peak RSS, {large:,} events",
            "MB",
            Series("publish_many, 1,000 a call", [ours_batches]),
            Series("pika, no confirms", [pika_publisher]),
        ),
        Row(
            "memory",
            f"publisher peak RSS, one batch of {large:,}",
            "MB",
            Series(f"publish_many({large:,} events)", [ours_one_batch]),
            Series("pika, no confirms", [pika_publisher]),
            note="a single publish_many call holds every event of its batch until confirmed",
        ),
    ]


CASES = {"memory": case_memory}
