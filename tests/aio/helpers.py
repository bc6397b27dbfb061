"""Running the asyncio subscriber in tests: until a condition holds, then stopped."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pika

from domain_event_broker import DomainEvent, replay
from domain_event_broker.aio import AsyncSubscriber, close_shared_publishers
from domain_event_broker.aio import publish_domain_event as aio_publish_domain_event

T = TypeVar("T")


async def run_until(
    subscriber: AsyncSubscriber,
    done: Callable[[], bool],
    timeout: float = 20.0,
    settle: float = 0.0,
) -> float:
    """Run ``subscriber`` until ``done()`` (then ``settle`` s more), stop it; return seconds.

    Fails the test when ``done()`` is not reached within ``timeout``.
    """
    started = time.monotonic()
    task = asyncio.create_task(subscriber.run())
    while not done() and time.monotonic() - started < timeout and not task.done():
        await asyncio.sleep(0.02)
    reached = done()
    elapsed = time.monotonic() - started
    await asyncio.sleep(settle)
    await subscriber.stop()
    await asyncio.wait_for(task, 30)  # raises what run() raised
    assert reached, f"condition not reached within {timeout} s"
    return elapsed


def delete_topology(broker_url: str, *names: str) -> None:
    """Delete the queues and exchanges of subscribers ``names`` (as conftest does for sync ones)."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for name in names:
            for queue in (name, f"{name}-dl"):
                channel.queue_delete(queue)
            for exchange in (f"{name}-dlx", f"{name}-retry"):
                channel.exchange_delete(exchange)


class LoopThread:
    """An event loop running in a thread of its own, for sync tests that drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class AioBackend:
    """The behaviour suite's backend for the asyncio API on the real broker."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.runner = LoopThread()
        self.subscriber = AsyncSubscriber(broker_url, handle_signals=False)

    def register(
        self,
        handler: Callable[[DomainEvent], object],
        name: str,
        binding_keys: list[str],
        **options: Any,
    ) -> None:
        async def call(event: DomainEvent) -> object:
            return handler(event)

        self.subscriber.register(call, name, binding_keys, **options)
        self.runner.run(self.subscriber.declare())

    def publish(self, routing_key: str, data: dict[str, Any]) -> DomainEvent:
        return self.runner.run(
            aio_publish_domain_event(routing_key, data, connection_settings=self.broker_url)
        )

    def run_until(self, done: Callable[[], bool]) -> None:
        self.runner.run(run_until(self.subscriber, done, timeout=20, settle=0.3), timeout=60)

    def dead_letters(self, name: str) -> list[DomainEvent]:
        letters = replay.list_dead_letters(name, self.broker_url)
        return [letter.event for letter in letters if letter.event is not None]

    def replay_all(self, name: str) -> None:
        replay.replay_all(name, connection_settings=self.broker_url)

    def close(self) -> None:
        try:
            self.runner.run(close_shared_publishers())
        finally:
            self.runner.close()
            delete_topology(self.broker_url, *self.subscriber.registered_names)
