"""A retry waiting while RabbitMQ restarts, and its subscriber is down, is not lost.

The test starts a throw-away single RabbitMQ node of its own (AMQP on
127.0.0.1:5690, Erlang distribution on 25690; see ``rabbit_cluster.py``) and
restarts it; the machine's node on 5672 is never touched. Runs through both drivers,
about 30 s each.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
from rabbit_cluster import RabbitCluster, throwaway_node

from domain_event_broker import DomainEvent, Retry, publish_domain_event
from drivers import Driver

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def single_node() -> Iterator[RabbitCluster]:
    with throwaway_node("debrestart", amqp_port=5690) as node:
        yield node


@pytest.mark.timeout(300)
def test_a_retry_waiting_through_a_broker_restart_is_handled_afterwards(
    single_node: RabbitCluster, make_driver: Callable[..., Driver]
) -> None:
    [node] = single_node.nodes
    name = f"restart-{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []

    def handle(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            raise Retry(2.0)

    # Classic queues and default options, as most 3.x users run.
    subscriber = make_driver(node.url)
    subscriber.register(handle, name, [f"{name}.#"], max_retries=3)
    sent = publish_domain_event(f"{name}.happened", {"n": 1}, connection_settings=node.url)
    # Settle: the copy is confirmed before the ack; let the ack reach the broker.
    subscriber.run_until(lambda: attempts == [0], timeout=30, settle=0.5)
    assert attempts == [0]
    with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
        depth = connection.channel().queue_declare(name, passive=True).method.message_count
    assert depth == 0, "the event is still in its queue, not waiting for its retry"

    # The subscriber is down; the broker restarts; the retry's delay passes meanwhile.
    single_node.stop_node(node)
    single_node.heal()

    received: list[DomainEvent] = []

    def handle_again(event: DomainEvent) -> None:
        received.append(event)
        handle(event)

    later = make_driver(node.url)
    later.register(handle_again, name, [f"{name}.#"], max_retries=3)
    later.run_until(lambda: len(attempts) >= 2, timeout=30, settle=0.3)
    assert attempts == [0, 1]
    assert received == [sent]
    assert received[0].routing_key == f"{name}.happened"
