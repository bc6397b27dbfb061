"""What another publisher's headers and a careless Retry subclass do to the asyncio subscriber."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain_event_broker import DomainEvent, publish_domain_event
from domain_event_broker.aio.subscriber.session import SessionFailed
from domain_event_broker.core.topology import SubscriberTopology
from domain_event_broker.topology import EXCEPTION_TYPE_HEADER, ROUTING_KEY_HEADER
from support import RetryWithoutDelay, get_all, queue_depth, send_to_queue

from .conftest import MakeAsyncSubscriber


def _run_for(subscriber: Any, seconds: float) -> None:
    async def main() -> None:
        task = asyncio.create_task(subscriber.run())
        await asyncio.sleep(seconds)
        await asyncio.wait_for(subscriber.stop(), 10)
        await task

    asyncio.run(main())


@pytest.mark.parametrize("routing_key_header", ["a" * 300, "user.*"])
def test_a_routing_key_header_that_is_no_routing_key_is_ignored(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber, routing_key_header: str
) -> None:
    handled: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        handled.append(event)

    subscriber = make_async_subscriber(concurrency=1)
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True)
    asyncio.run(subscriber.declare())
    send_to_queue(broker_url, name, b"not json", {ROUTING_KEY_HEADER: routing_key_header})
    after = publish_domain_event(f"{name}.after", {}, connection_settings=broker_url)
    _run_for(subscriber, 3)
    assert handled == [after]
    assert queue_depth(broker_url, name) == 0
    assert [body for _, _, body in get_all(broker_url, f"{name}-dl")] == [b"not json"]


def test_a_retry_subclass_without_a_delay_is_dead_lettered_and_the_next_event_handled(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    calls: list[Any] = []

    async def handler(event: DomainEvent) -> None:
        calls.append(event.data["n"])
        if event.data["n"] == 0:
            raise RetryWithoutDelay("later")

    subscriber = make_async_subscriber(concurrency=1, shutdown_grace_period=3)
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    asyncio.run(subscriber.declare())
    for number in (0, 1):
        publish_domain_event(f"{name}.x", {"n": number}, connection_settings=broker_url)
    _run_for(subscriber, 3)
    assert calls == [0, 1]
    letters = get_all(broker_url, f"{name}-dl")
    assert len(letters) == 1
    assert "RetryWithoutDelay" in str(letters[0][1].headers[EXCEPTION_TYPE_HEADER])


def test_the_applications_own_signal_handlers_are_back_after_run(
    broker_url: str, name: str, make_async_subscriber: MakeAsyncSubscriber
) -> None:
    import signal

    def applications_handler(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, applications_handler)
    try:

        async def handler(event: DomainEvent) -> None:
            pass

        subscriber = make_async_subscriber(handle_signals=True)
        subscriber.register(handler, name, [f"{name}.#"])
        _run_for(subscriber, 0.5)
        assert signal.getsignal(signal.SIGTERM) is applications_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_bug_while_opening_a_session_stops_run_instead_of_reconnecting_for_ever(
    name: str, make_async_subscriber: MakeAsyncSubscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A RuntimeError on a live connection is a bug of ours, not an outage: reconnecting
    # would repeat it out of sight (aio-pika raises RuntimeError for a dead connection too).
    async def handler(event: DomainEvent) -> None:
        pass

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"])

    def broken(topology: SubscriberTopology, *_: object) -> list[object]:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(SubscriberTopology, "declarations", broken)

    async def run() -> None:
        await asyncio.wait_for(subscriber.run(), 10)

    with pytest.raises(SessionFailed, match="RuntimeError: a bug of ours"):
        asyncio.run(run())


def test_a_bug_while_settling_is_an_error_with_its_traceback_and_the_event_comes_back(
    broker_url: str,
    name: str,
    make_async_subscriber: MakeAsyncSubscriber,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A RuntimeError of ours while the connection is live: no outage WARNING that hides
    # it, but an ERROR with the traceback; the event is redelivered, never acked unhandled.
    from domain_event_broker.aio.subscriber import settling

    real_store_copy = settling.store_copy
    calls: list[int] = []

    async def store_copy_with_a_bug(*args: Any, **kwargs: Any) -> str | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug of ours")
        return await real_store_copy(*args, **kwargs)

    monkeypatch.setattr(settling, "store_copy", store_copy_with_a_bug)
    handled: list[int] = []

    async def handler(event: DomainEvent) -> None:
        handled.append(event.data["n"])
        raise ValueError("dead-letter me")

    subscriber = make_async_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True)

    async def run() -> None:
        await subscriber.declare()
        task = asyncio.create_task(subscriber.run())
        publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
        for _ in range(200):
            if queue_depth(broker_url, f"{name}-dl") == 1:
                break
            await asyncio.sleep(0.05)
        await subscriber.stop()
        await task

    asyncio.run(run())
    assert handled == [1, 1]  # redelivered after the bug, then dead-lettered
    assert queue_depth(broker_url, f"{name}-dl") == 1
    assert queue_depth(broker_url, name) == 0
    [bug] = [r for r in caplog.records if "a bug, not an outage" in r.getMessage()]
    assert bug.levelname == "ERROR" and bug.exc_info is not None
    assert "RuntimeError: a bug of ours" in bug.getMessage()
