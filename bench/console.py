"""The operator console on a large broker: 200 subscribers, 10,000 dead letters.

``/`` (the event map) and ``/api/dead-letters`` (every letter read and grouped)
must answer in under 2 s each. The baseline beside the dead-letter figure is raw
pika streaming the same letters (a channel per queue, no grouping, no HTTP).
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable

import pika

from domain_event_broker import BrokerSettings, Subscriber
from domain_event_broker.console import Console, serve
from domain_event_broker.core.copies import plan_copy
from domain_event_broker.core.outcome import Policy, decide
from domain_event_broker.core.topology import SubscriberTopology, dead_letter_queue_name

from .harness import Broker, Context, Row, Series, interleave

#: What the issue asks: each answer in under this many milliseconds.
TARGET_MS = 2000.0


def _failure(number: int) -> Exception:
    try:
        if number % 3 == 0:
            raise ValueError(f"amount -{number} is negative")
        raise KeyError(f"customer {number} unknown")
    except (KeyError, ValueError) as error:
        return error


def _fill(broker: Broker, subscribers: int, letters: int) -> list[str]:
    names = [f"bench-console-{number:03d}" for number in range(subscribers)]
    subscriber = Subscriber(broker.url)
    try:
        for name in names:
            subscriber.register(lambda _event: None, name, [f"{name}.#"], dead_letter=True)
    finally:
        subscriber.disconnect()
    with broker.connection() as connection:
        channel = connection.channel()
        for number in range(letters):
            name = names[number % subscribers]
            topology = SubscriberTopology(name=name, binding_keys=(f"{name}.#",), dead_letter=True)
            outcome = decide(Policy(name, dead_letter=True), 0, _failure(number))
            plan = plan_copy(topology, outcome, None, 0, f"{name}.made", failed_at="2026-01-01")
            body = f'{{"routing_key": "{name}.made", "data": {{"n": {number}}}}}'.encode()
            properties = pika.BasicProperties(headers=plan.headers, delivery_mode=2)
            channel.basic_publish("", dead_letter_queue_name(name), body, properties)
    deadline = time.monotonic() + 60
    while sum(broker.depth(dead_letter_queue_name(name)) for name in names) < letters:
        if time.monotonic() > deadline:
            raise RuntimeError("the dead letters did not all arrive")
        time.sleep(0.2)
    return names


def _raw_read(broker: Broker, names: list[str]) -> int:
    """Every dead letter streamed with raw pika and given back: the reading alone."""
    read = 0
    with broker.connection() as connection:
        for name in names:
            channel = connection.channel()
            queue = dead_letter_queue_name(name)
            count = int(channel.queue_declare(queue, passive=True).method.message_count)
            got: list[bytes] = []
            channel.basic_consume(queue, _collect(got))
            while len(got) < count:
                connection.process_data_events(time_limit=0.2)
            channel.close()
            read += len(got)
    return read


def _collect(into: list[bytes]) -> Callable[..., None]:
    return lambda _channel, _method, _properties, body: into.append(body)


def _timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        reply.read()
    return (time.perf_counter() - started) * 1000


def case_console(context: Context) -> list[Row]:
    broker = context.broker
    subscribers = context.size(200, 20)
    letters = context.size(10_000, 1000)
    context.log(f"  declaring {subscribers} subscribers, {letters} dead letters ...")
    names = _fill(broker, subscribers, letters)
    server = serve(Console(BrokerSettings(broker.url)), "bench-token")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for path in ("", "api/dead-letters"):  # warm: connections, the management API's caches
            _timed_get(server.url + path)
        samples = interleave(
            context,
            {
                "map": lambda: _timed_get(server.url),
                "dead letters": lambda: _timed_get(server.url + "api/dead-letters"),
                "dead letters page": lambda: _timed_get(server.url + "dead-letters"),
                "raw pika read": lambda: _timed_ms(lambda: _raw_read(broker, names)),
            },
            unit="ms",
        )
    finally:
        server.shutdown()
        server.server_close()
    size = f"{subscribers} subscribers, {letters} dead letters"
    return [
        Row(
            "console",
            f"/ (event map), {size}",
            "ms",
            Series("ours", samples["map"]),
            target_kind="abs<=",
            target_value=TARGET_MS,
        ),
        Row(
            "console",
            f"/api/dead-letters, {size}",
            "ms",
            Series("ours", samples["dead letters"]),
            Series("raw pika read", samples["raw pika read"]),
            target_kind="abs<=",
            target_value=TARGET_MS,
            note="baseline: raw pika streams the same letters, a channel per queue, no grouping",
        ),
        Row(
            "console",
            f"/dead-letters (the page), {size}",
            "ms",
            Series("ours", samples["dead letters page"]),
            target_kind="abs<=",
            target_value=TARGET_MS,
        ),
    ]


def _timed_ms(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


CASES = {"console": case_console}
