"""Running the asyncio subscriber in tests: until a condition holds, then stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pika

from domain_event_broker.aio import AsyncSubscriber


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
