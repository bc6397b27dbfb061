"""Fixtures that talk to the real RabbitMQ on 127.0.0.1:5672.

The whole session runs in a vhost of its own, deleted at the end, so a test
that fails half-way cannot leave a queue behind that collects later events.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from domain_event_broker import Subscriber
from domain_event_broker.publisher import close_shared_publishers

RABBITMQ_HOST = "127.0.0.1"


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    name = f"deb-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    close_shared_publishers()
    rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def broker_url(vhost: str) -> str:
    return f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}"


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A subscriber name no other test uses."""
    test = request.node.name.split("[")[0].replace("test_", "")[:30]
    return f"{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def channel(broker_url: str) -> Iterator[Any]:
    """A raw pika channel for looking at queues the way an operator would."""
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    yield connection.channel()
    if connection.is_open:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


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


def pytest_configure(config: pytest.Config) -> None:
    import logging

    # pika narrates every channel at INFO; keep failure output about our code.
    logging.getLogger("pika").setLevel(logging.WARNING)


@pytest.fixture
def make_subscriber(broker_url: str) -> Iterator[Callable[..., Subscriber]]:
    """Build Subscribers on the test vhost; delete every queue they registered afterwards."""
    made: list[Subscriber] = []

    def make(url: str | None = None, **options: Any) -> Subscriber:
        options.setdefault("handle_signals", False)
        subscriber = Subscriber(url or broker_url, **options)
        made.append(subscriber)
        return subscriber

    yield make
    names: set[str] = set()
    for subscriber in made:
        subscriber.stop_consuming()
        names.update(subscriber.registered_names)
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for subscriber_name in names:
            for queue in (subscriber_name, f"{subscriber_name}-dl"):
                channel.queue_delete(queue)
            for exchange in (f"{subscriber_name}-dlx", f"{subscriber_name}-retry"):
                channel.exchange_delete(exchange)
