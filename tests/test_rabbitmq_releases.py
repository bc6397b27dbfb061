"""What differs between RabbitMQ 3.x and 4.x, through both drivers, on the broker the suite runs on.

`make test` runs this file on the machine's RabbitMQ 3.x and again on a RabbitMQ 4.0
node configured as 4.3 is by default (transient non-exclusive queues refused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pika
import pytest

from domain_event_broker import DomainEvent, publish_domain_event
from domain_event_broker.core import rabbitmq
from domain_event_broker.core.rabbitmq import RabbitMQVersion
from drivers import Driver
from support import delete_queues, rabbitmqctl

MakeDriver = Callable[..., Driver]


@pytest.fixture(scope="session")
def rabbitmq_version(broker_url: str) -> RabbitMQVersion:
    """The release of the broker the suite runs on, as it reports itself."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        return RabbitMQVersion.reported(connection._impl.server_properties)


def queue_arguments(vhost: str, queue: str) -> dict[str, object] | None:
    """``durable`` and the arguments of ``queue`` as RabbitMQ lists them (None: no such queue)."""
    for line in rabbitmqctl(
        "list_queues", "-p", vhost, "name", "durable", "arguments", "-q", "--no-table-headers"
    ).splitlines():
        name, durable, arguments = line.split("\t")
        if name == queue:
            return {"durable": durable == "true", "arguments": arguments}
    return None


def test_the_subscriber_logs_the_release_it_connected_to(
    name: str,
    make_driver: MakeDriver,
    rabbitmq_version: RabbitMQVersion,
    caplog: pytest.LogCaptureFixture,
) -> None:
    subscriber = make_driver()
    with caplog.at_level(logging.INFO, logger="domain_event_broker"):
        subscriber.register(print, name, [f"{name}.#"])
        subscriber.run_for(0.5)
    assert any(
        f"connected to RabbitMQ {rabbitmq_version}" in record.getMessage()
        for record in caplog.records
    )


@pytest.fixture
def short_transient_lease(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(rabbitmq, "TRANSIENT_QUEUE_LEASE_MS", 1500)
    yield 1500


def test_a_transient_subscriber_works_and_its_queue_goes_when_it_goes(
    vhost: str,
    name: str,
    broker_url: str,
    make_driver: MakeDriver,
    rabbitmq_version: RabbitMQVersion,
    short_transient_lease: int,
) -> None:
    # 3.x code registers throw-away subscribers so; RabbitMQ 4.3 refuses transient
    # non-exclusive queues by closing the connection.
    received: list[DomainEvent] = []
    subscriber = make_driver()
    subscriber.register(received.append, name, [f"{name}.#"], durable=False)
    sent = publish_domain_event(f"{name}.happened", {"n": 1}, connection_settings=broker_url)
    subscriber.run_until(lambda: len(received) == 1)
    assert received == [sent]
    declared = queue_arguments(vhost, name)
    assert declared is not None
    if rabbitmq_version.deprecates_transient_queues:
        # Durable with a lease: removed once no subscriber used it for the lease.
        assert declared["durable"] is True
        assert f'"x-expires",{short_transient_lease}' in str(declared["arguments"])
        deadline = time.monotonic() + short_transient_lease / 1000 + 10
        while queue_arguments(vhost, name) is not None:
            assert time.monotonic() < deadline, "the transient subscriber's queue stayed"
            time.sleep(0.2)
    else:
        assert declared["durable"] is False  # as 3.x releases declared it


def test_a_quorum_event_returned_many_times_is_kept(
    name: str, broker_url: str, make_driver: MakeDriver, vhost: str
) -> None:
    # RabbitMQ 4.x drops a quorum message after 20 returns unless told otherwise;
    # reading the dead-letter queue (basic.get, not acked) returns each message.
    subscriber = make_driver()
    subscriber.register(print, name, [f"{name}.#"], queue_type="quorum", dead_letter=True)
    publish_domain_event(f"{name}.happened", {"n": 1}, connection_settings=broker_url)
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in (name, f"{name}-dl"):
            if queue == f"{name}-dl":
                channel.basic_publish("", queue, b'{"x": 1}')
            time.sleep(0.3)
            for _ in range(25):
                method, _properties, _body = channel.basic_get(queue)
                assert method is not None, f"{queue}: the message was dropped after returns"
                channel.basic_nack(method.delivery_tag, requeue=True)
            method, _properties, _body = channel.basic_get(queue, auto_ack=True)
            assert method is not None, f"{queue}: the message was dropped after 25 returns"


def test_a_quorum_queue_an_older_release_declared_is_used_and_the_fix_logged_once(
    vhost: str,
    name: str,
    broker_url: str,
    make_driver: MakeDriver,
    rabbitmq_version: RabbitMQVersion,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As 9061fd9 (and every release before 4.x-awareness) declared them: no delivery limit.
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.queue_declare(f"{name}-dl", durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_declare(
            name,
            durable=True,
            arguments={"x-dead-letter-exchange": f"{name}-dlx", "x-queue-type": "quorum"},
        )
    received: list[DomainEvent] = []
    try:
        with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
            subscriber = make_driver()
            subscriber.register(
                received.append, name, [f"{name}.#"], queue_type="quorum", dead_letter=True
            )
            sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
            subscriber.run_until(lambda: len(received) == 1)
            rabbitmqctl("close_all_connections", "-p", vhost, "a reconnect declares again")
            subscriber.run_for(1.0)
        assert received == [sent]
        advice = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.ERROR and r.name.startswith("domain_event_broker")
        ]
        if rabbitmq_version.limits_quorum_deliveries:
            # One ERROR per queue, not per reconnect, naming the command to run.
            assert len(advice) == 2, advice
            assert all("set_policy" in line and "delivery-limit" in line for line in advice)
            assert any(f"'^{name}$'" in line for line in advice)
        else:
            assert advice == []
        # Never re-declared with other arguments: still as the older release made them.
        declared = queue_arguments(vhost, name)
        assert declared is not None and "x-delivery-limit" not in str(declared["arguments"])
    finally:
        delete_queues(broker_url, name, f"{name}-dl")


def test_a_new_quorum_queue_on_rabbitmq_4_has_no_delivery_limit(
    vhost: str, name: str, make_driver: MakeDriver, rabbitmq_version: RabbitMQVersion
) -> None:
    subscriber = make_driver()
    subscriber.register(print, name, [f"{name}.#"], queue_type="quorum", dead_letter=True)
    for queue in (name, f"{name}-dl"):
        declared = queue_arguments(vhost, queue)
        assert declared is not None
        unlimited = '"x-delivery-limit",-1' in str(declared["arguments"])
        # 3.x reads -1 as "no return allowed": there the argument is never set.
        assert unlimited == rabbitmq_version.limits_quorum_deliveries
