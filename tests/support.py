"""Helpers for tests that talk to the real RabbitMQ: look at queues as an operator would."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pika

from domain_event_broker import Subscriber


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def delete_queues(broker_url: str, *queues: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)


def queue_depth(broker_url: str, queue: str) -> int:
    """Ready messages in ``queue`` (unacked ones return when their consumer is gone)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        result = connection.channel().queue_declare(queue=queue, passive=True)
        return int(result.method.message_count)
    finally:
        connection.close()


def get_all(broker_url: str, queue: str) -> list[tuple[Any, Any, bytes]]:
    """Take every message out of ``queue`` (acked)."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    messages = []
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((method, properties, body))
    finally:
        connection.close()


def consume_until(
    subscriber: Subscriber,
    done: Callable[[], bool],
    timeout: float = 20.0,
    settle: float = 0.0,
) -> float:
    """Run ``subscriber`` in a thread until ``done()`` (then ``settle`` s more); return seconds.

    Fails the test when ``done()`` is not reached within ``timeout``.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            subscriber.start_consuming(timeout=timeout + settle + 5)
        except BaseException as error:
            errors.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not done() and time.monotonic() - started < timeout and thread.is_alive():
        time.sleep(0.02)
    reached = done()
    elapsed = time.monotonic() - started
    time.sleep(settle)
    subscriber.stop_consuming()
    thread.join(30)
    assert not thread.is_alive(), "subscriber did not stop"
    if errors:
        raise errors[0]
    assert reached, f"condition not reached within {timeout} s"
    return elapsed
