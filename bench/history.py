"""History: reading the archive beside consuming the live queue; publish latency, archive on/off.

``history``: a Subscriber with a no-op handler registered with ``start_from="first"``
on an exchange whose archive holds N events (every one matching), timed from
``start_consuming`` to the N-th event handled, beside the same Subscriber draining
a backlog of N events from its own queue (the live path). ``archive-latency``: a
confirmed ``Publisher.publish`` to an exchange with one queue bound, with and
without the archive bound beside it (the stream's write on every publish).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from domain_event_broker import DomainEvent, Publisher, Subscriber
from domain_event_broker._pika import close_stream_channel
from domain_event_broker.core.acks import StreamAcks
from domain_event_broker.core.archive import archive_name
from domain_event_broker.history import ARCHIVE_PREFETCH, disable_archive, enable_archive

from .consume import declare, filled, forget, ours_drain
from .harness import Broker, Context, Row, Series, event_body, interleave, median, unique

ROUTING_KEY = "bench.history"
ACK_BATCH = StreamAcks.for_prefetch(ARCHIVE_PREFETCH).batch
#: Seconds from start_consuming to the first history event (lock, markers, declare), per round.
SETUP: list[float] = []


def _fill_archive(broker: Broker, exchange: str, count: int) -> None:
    publisher = Publisher(broker.url, exchange=exchange)
    body = event_body(ROUTING_KEY)
    for _ in range(count):
        publisher.publish(body, ROUTING_KEY)
    publisher.disconnect()


def _read_history(broker: Broker, exchange: str, count: int) -> float:
    """Events per second a new subscriber handles from the archive (no-op handler).

    Its start looks for queues that do not exist yet (a passive declare each,
    which pika logs as a WARNING): expected here, so no disturbance of the run.
    """
    channel_log = logging.getLogger("pika.channel")
    level = channel_log.level
    channel_log.setLevel(logging.ERROR)
    try:
        return _timed_history(broker, exchange, count)
    finally:
        channel_log.setLevel(level)


def _timed_history(broker: Broker, exchange: str, count: int) -> float:
    name = unique("history-reader")
    subscriber = Subscriber(broker.url, exchange=exchange, handle_signals=False)
    counter = itertools.count(1)
    first, finished = [0.0], [0.0]

    def handler(_event: DomainEvent) -> None:
        number = next(counter)
        if number == 1:
            first[0] = time.perf_counter()
        if number == count:
            finished[0] = time.perf_counter()
            subscriber.stop_consuming()

    subscriber.register(handler, name, ["#"], start_from="first")
    started = time.perf_counter()
    subscriber.start_consuming(timeout=300)
    SETUP.append(first[0] - started)
    with broker.connection() as connection:
        channel = connection.channel()
        for queue in (name, f"{name}-history", f"{name}-history-lock"):
            channel.queue_delete(queue)
        channel.exchange_delete(f"{name}-retry")
    if not finished[0]:
        raise RuntimeError(f"the subscriber did not handle {count} history events")
    return (count - 1) / (finished[0] - first[0])


def _raw_stream_read(broker: Broker, exchange: str, count: int) -> float:
    """Raw pika reading the same stream: our prefetch and ack batch, no work."""
    received = [0]
    first, finished = [0.0], [0.0]
    with broker.connection() as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=ARCHIVE_PREFETCH)

        def on_message(channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
            received[0] += 1
            if received[0] == 1:
                first[0] = time.perf_counter()
            if received[0] % ACK_BATCH == 0 or received[0] == count:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if received[0] == count:
                finished[0] = time.perf_counter()

        archive = archive_name(exchange)
        channel.basic_consume(archive, on_message, arguments={"x-stream-offset": "first"})
        while not finished[0]:
            connection.process_data_events(time_limit=1.0)
        close_stream_channel(channel)  # a cancel would reject what is in flight: a stream refuses
    return (count - 1) / (finished[0] - first[0])


def prepare_archive(broker: Broker, exchange: str, count: int) -> None:
    """``python -m bench.profile history``: an archive on ``exchange`` holding ``count`` events."""
    enable_archive(broker.url, exchange=exchange)
    _fill_archive(broker, exchange, count)


def forget_archive(broker: Broker, exchange: str) -> None:
    disable_archive(broker.url, exchange=exchange)
    with broker.connection() as connection:
        connection.channel().exchange_delete(exchange)


def profiled_read(url: str, exchange: str, count: int) -> float:
    """The history read of ``case_history`` in a profiled child (``bench.profile``)."""
    return _read_history(_UrlBroker(url), exchange, count)


class _UrlBroker(Broker):
    """The vhost the parent process made: this process neither makes nor deletes it."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url


def case_history(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(10000, 2000)
    exchange = unique("history")
    live = unique("history-live")
    enable_archive(broker.url, exchange=exchange)
    declare(broker, live)
    try:
        _fill_archive(broker, exchange, count)
        samples = interleave(
            context,
            {
                "history read": lambda: _read_history(broker, exchange, count),
                "live queue": filled(broker, live, count, ours_drain),
                "raw pika stream read": lambda: _raw_stream_read(broker, exchange, count),
            },
        )
    finally:
        disable_archive(broker.url, exchange=exchange)
        forget(broker, live)
        with broker.connection() as connection:
            connection.channel().exchange_delete(exchange)
    return [
        Row(
            "history",
            "Subscriber start_from='first', no-op handler",
            "events/s",
            Series("history read (archive, every event matches)", samples["history read"]),
            Series("the same Subscriber draining its queue", samples["live queue"]),
            "ratio>=",
            1.0,
            note=f"{count} events; history from its first event to its last (before it: lock, "
            f"markers, declare, median {median(SETUP) * 1000:.0f} ms); live: a backlog drained",
        ),
        Row(
            "history",
            "history read beside raw pika reading the same stream",
            "events/s",
            Series("Subscriber start_from='first'", samples["history read"]),
            Series(
                f"pika, x-stream-offset first, prefetch {ARCHIVE_PREFETCH}, a multiple ack "
                f"every {ACK_BATCH}",
                samples["raw pika stream read"],
            ),
            note="the ceiling: what RabbitMQ gives an AMQP 0.9.1 reader of a stream that does "
            "nothing with what it reads (no handler, no decoding)",
        ),
    ]


def _publish_latency(broker: Broker, exchange: str, queue: str, count: int) -> float:
    """Median milliseconds of one confirmed publish."""
    publisher = Publisher(broker.url, exchange=exchange)
    body = event_body(ROUTING_KEY)
    for _ in range(50):  # warm up
        publisher.publish(body, ROUTING_KEY)
    took = []
    for _ in range(count):
        started = time.perf_counter()
        publisher.publish(body, ROUTING_KEY)
        took.append((time.perf_counter() - started) * 1000)
    publisher.disconnect()
    broker.purge(queue)
    return median(took)


def case_archive_latency(context: Context) -> list[Row]:
    broker = context.broker
    count = context.size(2000, 300)
    on, off = unique("archive-on"), unique("archive-off")
    queues = {exchange: unique("archive-queue") for exchange in (on, off)}
    with broker.connection() as connection:
        channel = connection.channel()
        for exchange, queue in queues.items():
            channel.exchange_declare(exchange, "topic", durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, exchange, "#")
    enable_archive(broker.url, exchange=on)
    try:
        samples = interleave(
            context,
            {
                "archive on": lambda: _publish_latency(broker, on, queues[on], count),
                "archive off": lambda: _publish_latency(broker, off, queues[off], count),
            },
            unit="ms",
        )
    finally:
        disable_archive(broker.url, exchange=on)
        with broker.connection() as connection:
            channel = connection.channel()
            for exchange, queue in queues.items():
                channel.queue_delete(queue)
                channel.exchange_delete(exchange)
    return [
        Row(
            "history",
            "Publisher.publish confirm latency, archive on, p50",
            "ms",
            Series("exchange with a queue and the archive", samples["archive on"]),
            Series("exchange with the queue only", samples["archive off"]),
            "ratio<=",
            1.5,
            note=f"{count} confirmed publishes one at a time a round",
        )
    ]


CASES = {"history": case_history, "archive-latency": case_archive_latency}
