"""A narrated tour on a real broker: publish, subscribe, retry, dead-letter, replay.

Run it with ``domain-events demo`` (or ``make demo``). It uses queues of its own,
named after its process id, and deletes them at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

import pika

from .connection import connect_blocking
from .errors import DomainEventBrokerError, Retry
from .events import DomainEvent
from .publisher import Publisher
from .replay import RETRY, replay_all
from .settings import BrokerSettings, ConnectionSettings, mask_url, resolve_url
from .subscriber import Subscriber
from .topology import (
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    dead_letter_exchange_name,
    dead_letter_queue_name,
    retry_exchange_name,
    wait_queue_name,
)


class _Narrator:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            self.out.write(f"[{time.monotonic() - self.started:5.1f}s] {line}\n")
            self.out.flush()


class _MailerService:
    """The demo's subscriber: sends an order confirmation for every placed order."""

    def __init__(self, say: _Narrator) -> None:
        self.say = say
        self.bug_fixed = False
        self.mails_sent: list[int] = []
        self.retries = 0
        self.all_done = threading.Event()

    def handle(self, event: DomainEvent) -> None:
        order = event.data["order_id"]
        if event.data.get("payment") == "flaky" and event.retries < 2:
            delay = 0.5 * 2**event.retries
            self.retries += 1
            self.say(
                f"  mailer: order {order}: payment service is down -> Retry({delay}) "
                f"(attempt {event.retries + 1}, event.retries={event.retries})"
            )
            raise Retry(delay)
        if event.data.get("email") is None and not self.bug_fixed:
            self.say(f"  mailer: order {order}: no e-mail address -> the handler raises ValueError")
            raise ValueError(f"order {order} has no e-mail address")
        self.mails_sent.append(order)
        suffix = f" (after {event.retries} retries)" if event.retries else ""
        self.say(f"  mailer: order {order}: confirmation mail sent{suffix}")
        if len(self.mails_sent) == 4:
            self.all_done.set()


def run_demo(connection_settings: ConnectionSettings = "", out: TextIO = sys.stdout) -> int:
    """Run the demo on the broker at ``connection_settings``; return an exit status."""
    url = resolve_url(connection_settings)
    if url is None:
        out.write("The demo needs a broker: pass an AMQP URL.\n")
        return 2
    # The narration says what happens; the library's own error log (with the
    # handler's traceback) would drown it. Real services keep those logs.
    for logger in ("pika", "domain_event_broker"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    say = _Narrator(out)
    name = f"demo-order-mailer-{os.getpid()}"
    routing_prefix = f"demo{os.getpid()}"
    mailer = _MailerService(say)
    try:
        subscriber = Subscriber(url, handle_signals=False)
        publisher = Publisher(url)
    except DomainEventBrokerError as error:
        out.write(f"{error}\n")
        return 1
    say(f"Connected to RabbitMQ at {mask_url(url)}")
    try:
        subscriber.register(
            mailer.handle, name, [f"{routing_prefix}.order.*"], dead_letter=True, max_retries=3
        )
        say(
            f"Subscriber {name!r} listens to '{routing_prefix}.order.*' with max_retries=3 "
            f"and a dead-letter queue '{dead_letter_queue_name(name)}'"
        )
        consumer = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 25})
        consumer.start()

        orders: list[dict[str, Any]] = [
            {"order_id": 1, "email": "ada@example.com"},
            {"order_id": 2, "email": "grace@example.com"},
            {"order_id": 3, "email": "alan@example.com", "payment": "flaky"},
            {"order_id": 4, "email": None},
        ]
        for data in orders:
            event = DomainEvent(f"{routing_prefix}.order.placed", data)
            publisher.publish_event(event)
            say(f"Published {event.routing_key} order {data['order_id']} (confirmed by the broker)")

        dead_letter_queue = dead_letter_queue_name(name)
        waited = time.monotonic()
        while _depth(url, dead_letter_queue) < 1 or len(mailer.mails_sent) < 3:
            if time.monotonic() - waited > 15:
                say("Timed out waiting for the retries and the dead letter")
                return 1
            time.sleep(0.1)
        say(f"The dead-letter queue {dead_letter_queue!r} now holds 1 event; an operator looks:")

        def show(frame: object, header: pika.BasicProperties, body: bytes) -> str:
            headers: dict[str, Any] = dict(header.headers or {})
            say(
                f"  dead letter: {json.loads(body)['data']} failed with "
                f"{headers.get(EXCEPTION_TYPE_HEADER)!s}: {headers.get(EXCEPTION_MESSAGE_HEADER)!s}"
            )
            return RETRY

        mailer.bug_fixed = True
        say("The bug is fixed (orders without an address get a fallback); replaying:")
        left = replay_all(name, show, connection_settings=url)
        say(f"Replayed; {left} events left in the dead-letter queue")
        if not mailer.all_done.wait(10):
            say("The replayed event was not handled in time")
            return 1
        subscriber.stop_consuming()
        consumer.join(30)
        say(
            f"Done: {len(orders)} orders published, {len(mailer.mails_sent)} mails sent, "
            f"{mailer.retries} delayed retries, 1 event dead-lettered and replayed."
        )
        return 0
    finally:
        subscriber.stop_consuming()
        publisher.disconnect()
        _delete_topology(url, name)
        say("Deleted the demo's queues and exchanges.")


def _depth(url: BrokerSettings, queue: str) -> int:
    connection = connect_blocking(url, "demo")
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _delete_topology(url: BrokerSettings, name: str) -> None:
    connection = connect_blocking(url, "demo")
    try:
        channel = connection.channel()
        # The demo's retries wait 0.5 s and 1 s (its handler's backoff).
        wait_queues = [wait_queue_name(name, delay_ms) for delay_ms in (500, 1000)]
        for queue in (name, dead_letter_queue_name(name), *wait_queues):
            channel.queue_delete(queue)
        for exchange in (dead_letter_exchange_name(name), retry_exchange_name(name)):
            channel.exchange_delete(exchange)
    finally:
        connection.close()
