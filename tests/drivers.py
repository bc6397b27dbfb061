"""One consuming subscriber, whichever driver runs it: the seam of the parity tests.

A test written against :class:`Driver` runs once with the pika driver
(:class:`~domain_event_broker.Subscriber`) and once with the aio-pika driver
(:class:`~domain_event_broker.aio.AsyncSubscriber`), on the real broker: a rule
one driver breaks is a failing test. Handlers are plain functions; the asyncio
driver awaits them through a coroutine wrapper, as an ``async def`` handler that
does no I/O would run.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from domain_event_broker import DomainEvent, Publisher, Subscriber
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber, close_shared_publishers
from domain_event_broker.messages import OutgoingMessage, PublishOutcome
from support import consume_until

Handler = Callable[[DomainEvent], object]
T = TypeVar("T")


class Driver(Protocol):
    #: "pika" or "aio-pika".
    kind: str

    def register(
        self, handler: Handler, name: str, binding_keys: list[str], **options: Any
    ) -> None:
        """Register ``handler`` as the subscriber's ``register`` does (same options)."""

    def run_for(self, seconds: float) -> float:
        """Consume for ``seconds``, then stop; return how long it took to return."""

    def run_until(
        self, done: Callable[[], bool], timeout: float = 20.0, settle: float = 0.3
    ) -> None:
        """Consume until ``done()`` (then ``settle`` s more), then stop; fail after ``timeout``."""

    def stop(self) -> None:
        """Stop consuming (from another thread)."""

    def pause(self, seconds: float) -> object:
        """For a handler to return: a pause as long-running handler code of this driver
        takes it (a blocking sleep on pika's worker thread; an awaited sleep that
        leaves the event loop free on aio-pika)."""


class PikaDriver:
    kind = "pika"

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def register(
        self, handler: Handler, name: str, binding_keys: list[str], **options: Any
    ) -> None:
        self.subscriber.register(handler, name, binding_keys, **options)

    def run_for(self, seconds: float) -> float:
        started = time.monotonic()
        self.subscriber.start_consuming(timeout=seconds)
        return time.monotonic() - started

    def run_until(
        self, done: Callable[[], bool], timeout: float = 20.0, settle: float = 0.3
    ) -> None:
        consume_until(self.subscriber, done, timeout=timeout, settle=settle)

    def stop(self) -> None:
        self.subscriber.stop_consuming()

    def pause(self, seconds: float) -> object:
        time.sleep(seconds)
        return None


class AioPikaDriver:
    kind = "aio-pika"

    def __init__(self, subscriber: AsyncSubscriber) -> None:
        self.subscriber = subscriber
        self._loop: asyncio.AbstractEventLoop | None = None

    def register(
        self, handler: Handler, name: str, binding_keys: list[str], **options: Any
    ) -> None:
        async def call(event: DomainEvent) -> object:
            result = handler(event)
            if inspect.isawaitable(result):
                return await result
            return result

        self.subscriber.register(call, name, binding_keys, **options)
        # Declared now, as the pika driver's register() does: events published
        # before consuming starts must find the queue.
        self._run(self.subscriber.declare())

    def run_for(self, seconds: float) -> float:
        async def run() -> float:
            started = time.monotonic()
            task = asyncio.create_task(self.subscriber.run())
            done, _ = await asyncio.wait({task}, timeout=seconds)
            if not done:
                await self.subscriber.stop()
            await asyncio.wait_for(task, 30)  # raises what run() raised
            return time.monotonic() - started

        return self._run(run())

    def run_until(
        self, done: Callable[[], bool], timeout: float = 20.0, settle: float = 0.3
    ) -> None:
        async def run() -> bool:
            started = time.monotonic()
            task = asyncio.create_task(self.subscriber.run())
            while not done() and time.monotonic() - started < timeout and not task.done():
                await asyncio.sleep(0.02)
            reached = done()
            await asyncio.sleep(settle)
            await self.subscriber.stop()
            await asyncio.wait_for(task, 30)
            return reached

        assert self._run(run()), f"condition not reached within {timeout} s"

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.subscriber.stop(), loop)

    def pause(self, seconds: float) -> object:
        return asyncio.sleep(seconds)

    def _run(self, coroutine: Any) -> Any:
        async def main() -> Any:
            self._loop = asyncio.get_running_loop()
            try:
                return await coroutine
            finally:
                await close_shared_publishers()
                self._loop = None

        return asyncio.run(main())


class Publishing(Protocol):
    """One publisher, whichever driver runs it, called from plain threads."""

    kind: str

    def set_publish_timeout(self, seconds: float) -> None:
        """Change how long a publish may take (both drivers have the attribute)."""

    def publish_event(self, event: DomainEvent) -> None:
        """Publish and wait for the broker's confirm, as ``publish_event`` does."""

    def publish_batch(self, events: list[DomainEvent]) -> list[PublishOutcome]:
        """Publish with pipelined confirms; one outcome per event, as ``publish_batch``."""

    def close(self) -> None:
        """Close the connection (the driver's ``disconnect``/``close``)."""


class PikaPublishing:
    kind = "pika"

    def __init__(self, url: str, **options: Any) -> None:
        self.publisher = Publisher(url, **options)

    def set_publish_timeout(self, seconds: float) -> None:
        self.publisher.publish_timeout = seconds

    def publish_event(self, event: DomainEvent) -> None:
        self.publisher.publish_event(event)

    def publish_batch(self, events: list[DomainEvent]) -> list[PublishOutcome]:
        return self.publisher.publish_batch([OutgoingMessage.of_event(e) for e in events])

    def close(self) -> None:
        self.publisher.disconnect()


class AioPikaPublishing:
    """An AsyncPublisher on an event loop of its own thread, as a sync caller sees it."""

    kind = "aio-pika"

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="aio-publishing", daemon=True
        )
        self._thread.start()
        self.publisher = AsyncPublisher(url, **options)

    def set_publish_timeout(self, seconds: float) -> None:
        self.publisher.publish_timeout = seconds

    def publish_event(self, event: DomainEvent) -> None:
        self._call(self.publisher.publish_event(event))

    def publish_batch(self, events: list[DomainEvent]) -> list[PublishOutcome]:
        messages = [OutgoingMessage.of_event(event) for event in events]
        return self._call(self.publisher.publish_batch(messages))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.publisher.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def publishing(kind: str, url: str, **options: Any) -> Publishing:
    """A publisher of the driver ``kind`` ("pika" or "aio-pika") on ``url``."""
    if kind == "pika":
        return PikaPublishing(url, **options)
    return AioPikaPublishing(url, **options)
