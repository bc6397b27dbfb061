"""The asyncio subscriber removes the wait queues it has long stopped using, never a full one."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pika
import pika.exceptions
import pytest

from domain_event_broker import DomainEvent, Retry, wait_queues
from domain_event_broker.aio import publish_domain_event as apublish
from domain_event_broker.aio.topology import WaitQueues
from domain_event_broker.topology import SubscriberTopology
from support import queue_depth

from .conftest import MakeAsyncSubscriber
from .helpers import run_until


def test_an_idle_wait_queue_is_removed_but_never_while_it_holds_a_copy(
    broker_url: str,
    name: str,
    make_async_subscriber: MakeAsyncSubscriber,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wait_queues, "IDLE_AFTER", 0.5)
    monkeypatch.setattr(wait_queues, "CHECK_INTERVAL", 0.2)
    attempts: list[int] = []

    async def handler(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            raise Retry(0.1)

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], max_retries=1)

    async def retried_then_removed() -> None:
        await subscriber.declare()
        await apublish(f"{name}.x", {}, connection_settings=broker_url)
        await run_until(subscriber, lambda: len(attempts) == 2, timeout=15)
        assert wait_queue_exists(broker_url, f"{name}-wait-100")
        # Idle for delay + 0.5 s, looked at every 0.2 s: the subscriber removes it.
        await run_until(
            subscriber, lambda: not wait_queue_exists(broker_url, f"{name}-wait-100"), timeout=10
        )

    asyncio.run(retried_then_removed())
    assert attempts == [0, 1]

    # A wait queue that holds a copy (ours not yet due, or another instance's) stays.
    topology = SubscriberTopology(name, (f"{name}.#",))
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as blocking:
        blocking.channel().queue_declare(
            f"{name}-wait-60000", durable=True, arguments=topology.wait_queue_arguments(60_000)
        )
        blocking.channel().basic_publish("", f"{name}-wait-60000", b"{}")

    async def kept_while_full_then_removed() -> None:
        connection = await aio_pika.connect(broker_url)
        try:
            queues = WaitQueues(topology)
            await queues.route(await connection.channel(), 60_000)
            # The first look only schedules the next one; from then on every look counts.
            assert await queues.remove_idle(connection, now=0.0) == []
            much_later = time.monotonic() + 10**6
            assert await queues.remove_idle(connection, now=much_later) == []
            assert queue_depth(broker_url, f"{name}-wait-60000") == 1
            with pika.BlockingConnection(pika.URLParameters(broker_url)) as blocking:
                blocking.channel().queue_purge(f"{name}-wait-60000")
            later_still = much_later + 60 + wait_queues.IDLE_AFTER + 1
            assert await queues.remove_idle(connection, now=later_still) == [f"{name}-wait-60000"]
        finally:
            await connection.close()

    asyncio.run(kept_while_full_then_removed())
    assert not wait_queue_exists(broker_url, f"{name}-wait-60000")


def test_a_quorum_wait_queue_is_kept(broker_url: str, name: str) -> None:
    topology = SubscriberTopology(name, (f"{name}.#",), queue_type="quorum")

    async def main() -> list[str]:
        connection = await aio_pika.connect(broker_url)
        try:
            queues = WaitQueues(topology)
            await queues.route(await connection.channel(), 1_000)
            return await queues.remove_idle(connection, now=10**9)
        finally:
            await connection.close()

    try:
        assert asyncio.run(main()) == []
        assert wait_queue_exists(broker_url, f"{name}-wait-1000")
    finally:
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as blocking:
            blocking.channel().queue_delete(f"{name}-wait-1000")


def wait_queue_exists(broker_url: str, queue: str) -> bool:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        try:
            connection.channel().queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True
