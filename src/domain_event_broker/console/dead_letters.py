"""Reading a subscriber's dead letters for the console, and replaying or discarding a group.

Reading is one consumer on ``N-dl`` with no prefetch limit: the broker streams
the letters, we take exactly as many as a passive declare counted just before,
and closing the channel gives every one back, in its place (nothing acked,
nothing lost or reordered). One ``basic.get`` per letter took 6.91 s for the
test set, streaming 0.97 s.

A quorum ``N-dl`` with a delivery limit (RabbitMQ 4.0-4.2 set 20 by default)
counts each return: reading it would wear its letters out, so such a queue is
not read; the console says why and how to lift the limit. Ours declare it
unlimited on 4.x (:mod:`..core.rabbitmq`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .._pika import channel_impl, server_properties
from ..connection import connect_blocking
from ..core.fingerprint import FailureGroup, failure_of, fingerprint, group_failures
from ..core.rabbitmq import RabbitMQVersion, returns_wear_out
from ..core.topology import dead_letter_queue_name, retry_exchange_name, routing_key_in
from ..errors import InvalidEvent
from ..events import DomainEvent
from ..replay import DeadLetter, republish
from ..settings import BrokerSettings

log = logging.getLogger(__name__)

#: Seconds a listing waits for the broker to stream the letters it counted.
READ_TIMEOUT = 30.0


@dataclass(frozen=True)
class Letter(DeadLetter):
    """One dead letter as the console shows it, with its place in the queue."""

    position: int

    @property
    def event_id(self) -> str | None:
        event = self.event
        return event.uuid_string if event is not None else None


@dataclass(frozen=True)
class SubscriberLetters:
    """A subscriber's dead letters, grouped (``unreadable``: why they were not read)."""

    subscriber: str
    count: int
    groups: list[FailureGroup]
    letters: list[Letter]
    unreadable: str = ""


def read_letters(
    url: BrokerSettings, rows: Mapping[str, Mapping[str, Any] | None]
) -> list[SubscriberLetters]:
    """Every dead letter now of each subscriber in ``rows`` (name: its ``N-dl`` row of
    the management API), grouped by failure; none is removed.

    One connection and one channel for all: a consumer on each queue, every
    letter streamed at once; then the channel is closed, which gives every
    letter back to its place (a cancel and a channel close per queue would cost
    two round trips each).
    """
    connection = connect_blocking(url, "console")
    try:
        node = RabbitMQVersion.reported(server_properties(connection))
        readable = {name: row for name, row in rows.items() if not returns_wear_out(row, node)}
        streamed = _stream(connection, [dead_letter_queue_name(name) for name in readable])
    finally:
        if connection.is_open:
            connection.close()
    read = []
    for name, row in rows.items():
        if name not in readable:
            read.append(_unreadable(name, row))
            continue
        letters = streamed[dead_letter_queue_name(name)].letters
        groups = group_failures(letter.headers for letter in letters)
        read.append(SubscriberLetters(name, len(letters), groups, letters))
    return read


def _unreadable(subscriber: str, row: Mapping[str, Any] | None) -> SubscriberLetters:
    return SubscriberLetters(
        subscriber,
        int((row or {}).get("messages_ready") or 0),
        [],
        [],
        unreadable=(
            f"{dead_letter_queue_name(subscriber)} is a quorum queue with a delivery limit: "
            "reading its letters would count against it and drop them. Lift it with a policy "
            """'{"delivery-limit":-1}' --apply-to quorum_queues to see them here."""
        ),
    )


class _Collector:
    """The letters of one queue, up to the count it had when it was declared."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.letters: list[Letter] = []

    @property
    def full(self) -> bool:
        return len(self.letters) >= self.count

    def __call__(
        self, _channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        if not self.full:
            headers = dict(properties.headers or {})
            key = routing_key_in(headers) or str(method.routing_key)
            self.letters.append(Letter(key, body, headers, len(self.letters)))


def _stream(connection: pika.BlockingConnection, queues: list[str]) -> dict[str, _Collector]:
    collectors: dict[str, _Collector] = {}
    if not queues:
        return collectors
    pending = list(queues)
    channel = connection.channel()
    while pending:
        if channel.is_closed:
            channel = connection.channel()
        channel.basic_qos(prefetch_count=0)
        on_channel: list[str] = []
        try:
            while pending:
                queue = pending[0]
                count = int(channel.queue_declare(queue, passive=True).method.message_count)
                collectors[queue] = _Collector(count)
                pending.pop(0)
                if count:
                    channel.basic_consume(queue, collectors[queue], auto_ack=False)
                    on_channel.append(queue)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 404:
                raise
            # Gone since the listing: no letters. The channel's consumers went with it
            # (their letters back in place): read those queues again on a new channel.
            collectors[pending.pop(0)] = _Collector(0)
            pending[:0] = on_channel
    deadline = time.monotonic() + READ_TIMEOUT
    while not all(c.full for c in collectors.values()) and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    # Closing the channel gives every letter back to its place. Closed underneath
    # pika's BlockingChannel: it would cancel each consumer first, a round trip each.
    if channel.is_open:
        channel_impl(channel).close()
    while channel.is_open and time.monotonic() < deadline + READ_TIMEOUT:
        connection.process_data_events(time_limit=0.2)
    return collectors


@dataclass
class Progress:
    """How far a bulk action has come; read by the page's progress bar."""

    total: int
    visited: int = 0
    matched: int = 0
    done: bool = False
    summary: str = ""
    error: str = ""


def act_on_group(
    url: BrokerSettings,
    subscriber: str,
    verb: str,
    matches: Callable[[Mapping[str, Any], bytes], bool],
    progress: Progress,
) -> int:
    """Replay (``verb`` "replay") or discard every dead letter of ``subscriber`` that
    ``matches(headers, body)``; leave the others where they are. Returns the letters left
    of those looked at.

    The letters are streamed as for reading (no ``basic.get`` round trip each): a
    matching one is published (replay, confirmed) and acked, the others stay unacked
    until the channel closes, which gives them back in their places.
    """
    dead_letter_queue = dead_letter_queue_name(subscriber)
    connection = connect_blocking(url, "console")
    try:
        exchange = retry_exchange_name(subscriber) if verb == "replay" else ""
        channel = connection.channel()
        channel.confirm_delivery()
        count = int(channel.queue_declare(dead_letter_queue, passive=True).method.message_count)
        channel.basic_qos(prefetch_count=0)  # the letters left stay unacked: no limit
        if count:
            for method, properties, body in channel.consume(
                dead_letter_queue, inactivity_timeout=READ_TIMEOUT
            ):
                if method is None or properties is None or body is None:
                    break  # fewer letters than counted (taken meanwhile)
                progress.visited += 1
                if matches(dict(properties.headers or {}), body):
                    if verb == "replay":
                        republish(channel, exchange, method, properties, body)
                    channel.basic_ack(int(method.delivery_tag or 0))
                    progress.matched += 1
                if progress.visited >= count:
                    break
        # Gives the letters left back in their places (acks go first, in order).
        channel_impl(channel).close()
        while channel.is_open:
            connection.process_data_events(time_limit=0.2)
    finally:
        if connection.is_open:
            connection.close()
    log.info("console: %s %d dead letters of %s", verb, progress.matched, subscriber)
    return progress.visited - progress.matched


def in_group(group: str) -> Callable[[Mapping[str, Any], bytes], bool]:
    """Matches the letters whose failure has fingerprint ``group``."""
    return lambda headers, _body: fingerprint(failure_of(headers)) == group


def is_event(event_id: str) -> Callable[[Mapping[str, Any], bytes], bool]:
    """Matches the letter of the event with id ``event_id``."""

    def matches(_headers: Mapping[str, Any], body: bytes) -> bool:
        try:
            return DomainEvent.from_json(body).uuid_string == event_id
        except InvalidEvent:
            return False

    return matches
