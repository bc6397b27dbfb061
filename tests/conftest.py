"""Fixtures that talk to the real RabbitMQ on 127.0.0.1:5672 (``DEB_TEST_AMQP_PORT``).

The whole session runs in a vhost of its own, deleted at the end, so a test
that fails half-way cannot leave a queue behind that collects later events.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

import broker_guard
from domain_event_broker import Subscriber
from domain_event_broker.aio import AsyncSubscriber
from domain_event_broker.publisher import close_shared_publishers
from drivers import AioPikaDriver, Driver, PikaDriver, Publishing, publishing
from support import broker_at, delete_subscriber_topology, rabbitmqctl


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    name = f"deb-test-{uuid.uuid4().hex[:8]}"
    _require_broker("the test session")
    for attempt in range(3):
        try:
            rabbitmqctl("add_vhost", name)
            break
        except subprocess.CalledProcessError:
            # The broker may be restarting (a fault test elsewhere on this machine).
            if attempt == 2:
                raise
            rabbitmqctl("await_startup")
            time.sleep(1)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    broker_guard.SESSION_VHOSTS.append(name)
    yield name
    close_shared_publishers()
    rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def broker_url(vhost: str) -> str:
    return broker_at(vhost)


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


@pytest.fixture(autouse=True)
def broker_is_up(request: pytest.FixtureRequest) -> None:
    """A test that uses the suite's broker starts with it answering (broker_guard.py)."""
    if "vhost" in request.fixturenames:
        _require_broker(request.node.nodeid)


def _require_broker(before: str) -> None:
    failure = broker_guard.ensure_broker_answers(before)
    if failure is not None:
        pytest.exit(f"the suite's broker is down and could not be brought back: {failure}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if broker_guard.OUTAGES:
        terminalreporter.section("broker outages found between tests")
        for line in broker_guard.OUTAGES:
            terminalreporter.write_line(line)


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
    delete_subscriber_topology(broker_url, *names)


@pytest.fixture(params=["pika", "aio-pika"])
def driver_kind(request: pytest.FixtureRequest) -> str:
    """Each driver in turn: a test that takes it runs once per driver."""
    kind: str = request.param
    return kind


@pytest.fixture
def make_driver(
    driver_kind: str,
    broker_url: str,
    make_subscriber: Callable[..., Subscriber],
) -> Iterator[Callable[..., Driver]]:
    """Build a subscriber of each driver in turn (the test runs once per driver)."""
    made: list[AsyncSubscriber] = []

    def make(url: str | None = None, **options: Any) -> Driver:
        if driver_kind == "pika":
            return PikaDriver(make_subscriber(url, **options))
        options.setdefault("handle_signals", False)
        subscriber = AsyncSubscriber(url or broker_url, **options)
        made.append(subscriber)
        return AioPikaDriver(subscriber)

    yield make
    delete_subscriber_topology(
        broker_url, *{name for subscriber in made for name in subscriber.registered_names}
    )


@pytest.fixture
def make_publishing(driver_kind: str, broker_url: str) -> Iterator[Callable[..., Publishing]]:
    """Build publishers of the driver under test; close them afterwards."""
    made: list[Publishing] = []

    def make(url: str | None = None, **options: Any) -> Publishing:
        made.append(publishing(driver_kind, url or broker_url, **options))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()


@pytest.fixture
def spans() -> Iterator[Any]:
    """(provider, exporter): the library traced into spans kept in memory (OpenTelemetry SDK)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from domain_event_broker import otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider)
    try:
        yield provider, exporter
    finally:
        otel.uninstrument()
