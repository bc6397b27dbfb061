"""Inputs no test tried before: none of them may stop, freeze or hot-loop a subscriber.

The tests that take ``make_driver`` run once with each driver (pika and aio-pika):
the rules are the core's, and a driver that breaks one fails here.

Whatever a body, a handler or a Retry delay does, each event ends handled,
waiting for a retry, in the dead-letter queue, dropped with an error log, or
back in its own queue after a pause; and ``start_consuming(timeout=...)``
returns when its time is up, not after the shutdown grace period.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable

import pika
import pytest

from domain_event_broker import DomainEvent, Retry, Subscriber, publish_domain_event
from domain_event_broker.topology import (
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    ROUTING_KEY_HEADER,
)
from drivers import Driver
from support import (
    FreezingProxy,
    RetryWithoutDelay,
    consume_until,
    get_all,
    queue_depth,
    rabbitmqctl,
    send_to_queue,
)

MakeSubscriber = Callable[..., Subscriber]
#: Builds a subscriber of the test's driver (pika or aio-pika): those tests run on both.
MakeDriver = Callable[..., Driver]

#: start_consuming(timeout=TIMEOUT) must return within this many seconds.
TIMEOUT = 4.0
RETURNS_WITHIN = TIMEOUT + 2.5


def publish_raw(broker_url: str, routing_key: str, body: bytes) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("domain-events", routing_key, body, pika.BasicProperties())


def test_a_body_nested_5000_deep_is_dead_lettered_and_consuming_goes_on(
    broker_url: str, name: str, make_driver: MakeDriver
) -> None:
    handled: list[DomainEvent] = []
    subscriber = make_driver()
    subscriber.register(handled.append, name, [f"{name}.#"], dead_letter=True)
    publish_raw(broker_url, f"{name}.deep", b"[" * 5000)
    sent = publish_domain_event(f"{name}.after", {}, connection_settings=broker_url)
    elapsed = subscriber.run_for(TIMEOUT)
    assert handled == [sent], "the event after the nested body was not handled"
    assert elapsed < RETURNS_WITHIN, f"start_consuming(timeout={TIMEOUT}) took {elapsed:.1f} s"
    [(_, properties, body)] = get_all(broker_url, f"{name}-dl")
    assert body == b"[" * 5000
    assert "InvalidEvent" in properties.headers[EXCEPTION_TYPE_HEADER]
    assert queue_depth(broker_url, name) == 0


class Meltdown(BaseException):
    """Not an Exception: handlers can raise it all the same."""


def test_a_handler_raising_a_base_exception_dead_letters_the_event(
    broker_url: str, name: str, make_driver: MakeDriver
) -> None:
    handled: list[str] = []

    def handle(event: DomainEvent) -> None:
        if event.data["n"] == 0:
            raise Meltdown("core too hot")
        handled.append(event.uuid_string)

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {"n": 0}, connection_settings=broker_url)
    after = publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    elapsed = subscriber.run_for(TIMEOUT)
    assert handled == [after.uuid_string]
    assert elapsed < RETURNS_WITHIN, f"start_consuming(timeout={TIMEOUT}) took {elapsed:.1f} s"
    [(_, properties, _)] = get_all(broker_url, f"{name}-dl")
    assert properties.headers[EXCEPTION_TYPE_HEADER].endswith("Meltdown")
    assert properties.headers[EXCEPTION_MESSAGE_HEADER] == "core too hot"
    assert queue_depth(broker_url, name) == 0


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_a_handler_asking_the_process_to_stop_stops_the_subscriber_and_requeues_the_event(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    stop: type[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def handle(event: DomainEvent) -> None:
        calls.append(event.uuid_string)
        raise stop()

    subscriber = make_subscriber()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            subscriber.start_consuming(timeout=20)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        thread.start()
        thread.join(15)
    assert not thread.is_alive(), "the subscriber went on consuming"
    assert time.monotonic() - started < 10
    assert len(calls) == 1
    # Visible: the stop reaches the caller of start_consuming, and the log says why.
    assert [type(error) for error in raised] == [stop]
    assert any(stop.__name__ in record.getMessage() for record in caplog.records)
    # The event was not acked: it is back in its own queue, not dead-lettered.
    assert queue_depth(broker_url, name) == 1
    assert queue_depth(broker_url, f"{name}-dl") == 0


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), 1e12])
def test_a_retry_delay_the_broker_cannot_take_dead_letters_the_event(
    broker_url: str, name: str, make_driver: MakeDriver, delay: float
) -> None:
    handled: list[int] = []

    def handle(event: DomainEvent) -> None:
        if event.data["n"] == 0:
            raise Retry(delay)
        handled.append(event.data["n"])

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True, max_retries=5)
    publish_domain_event(f"{name}.x", {"n": 0}, connection_settings=broker_url)
    publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    elapsed = subscriber.run_for(TIMEOUT)
    assert handled == [1], "the subscriber stopped consuming"
    assert elapsed < RETURNS_WITHIN, f"start_consuming(timeout={TIMEOUT}) took {elapsed:.1f} s"
    [(_, properties, _)] = get_all(broker_url, f"{name}-dl")
    assert properties.headers[EXCEPTION_TYPE_HEADER] == "ValueError"
    assert "Retry delay" in properties.headers[EXCEPTION_MESSAGE_HEADER]
    assert queue_depth(broker_url, name) == 0


def test_a_handler_raising_cancelled_error_dead_letters_the_event_and_consuming_goes_on(
    broker_url: str, name: str, make_driver: MakeDriver
) -> None:
    # Something the handler awaited was cancelled: its failure, not the subscriber's stop.
    handled: list[int] = []

    def handle(event: DomainEvent) -> None:
        if event.data["n"] == 0:
            raise asyncio.CancelledError
        handled.append(event.data["n"])

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {"n": 0}, connection_settings=broker_url)
    publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    elapsed = subscriber.run_for(TIMEOUT)
    assert handled == [1], "the worker ended on the handler's CancelledError"
    assert elapsed < RETURNS_WITHIN
    assert queue_depth(broker_url, f"{name}-dl") == 1
    assert queue_depth(broker_url, name) == 0


def test_a_handler_failure_is_logged_once_with_its_traceback(
    broker_url: str, name: str, make_driver: MakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    def handle(event: DomainEvent) -> None:
        raise KeyError("no such customer")

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
        subscriber.run_until(lambda: queue_depth(broker_url, f"{name}-dl") == 1)
    [record] = [r for r in caplog.records if sent.uuid_string in r.getMessage()]
    assert "KeyError" in record.getMessage() and f"{name}-dl" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError, "no traceback"


def test_an_exception_message_with_a_lone_surrogate_is_dead_lettered(
    broker_url: str, name: str, make_driver: MakeDriver
) -> None:
    handled: list[int] = []

    def handle(event: DomainEvent) -> None:
        if event.data["n"] == 0:
            raise ValueError("bad \udcff text")
        handled.append(event.data["n"])

    subscriber = make_driver()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {"n": 0}, connection_settings=broker_url)
    publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    elapsed = subscriber.run_for(TIMEOUT)
    assert handled == [1]
    assert elapsed < RETURNS_WITHIN, f"start_consuming(timeout={TIMEOUT}) took {elapsed:.1f} s"
    [(_, properties, _)] = get_all(broker_url, f"{name}-dl")
    message = properties.headers[EXCEPTION_MESSAGE_HEADER]
    assert message.startswith("bad ") and message.endswith(" text")


def test_a_refused_dead_letter_copy_is_retried_with_backoff_and_nothing_is_lost(
    broker_url: str,
    vhost: str,
    name: str,
    make_driver: MakeDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A full dead-letter queue that rejects new messages: the broker nacks every copy.
    policy = f"{name}-full"
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        policy,
        f"^{name}-dl$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    calls: list[float] = []

    def fail(event: DomainEvent) -> None:
        calls.append(time.monotonic())
        raise ValueError("cannot handle this")

    subscriber = make_driver()
    subscriber.register(fail, name, [f"{name}.#"], dead_letter=True)
    sent = [
        publish_domain_event(f"{name}.x", {"n": n}, connection_settings=broker_url)
        for n in range(3)
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
            elapsed = subscriber.run_for(TIMEOUT)
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, policy)
    assert elapsed < RETURNS_WITHIN, f"start_consuming(timeout={TIMEOUT}) took {elapsed:.1f} s"
    # Three events fail once each, then each further attempt waits for a growing pause.
    assert 3 <= len(calls) <= 3 + 3 * TIMEOUT, f"the handler ran {len(calls)} times in {TIMEOUT} s"
    refusals = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    # Nothing lost: all three are back in their queue ...
    assert queue_depth(broker_url, name) == 3
    assert queue_depth(broker_url, f"{name}-dl") == 0
    # ... and reach the dead-letter queue once it takes them again.
    subscriber.run_until(lambda: queue_depth(broker_url, f"{name}-dl") == 3)
    stored = sorted(
        DomainEvent.from_json(body).data["n"] for _, _, body in get_all(broker_url, f"{name}-dl")
    )
    assert stored == [event.data["n"] for event in sent]
    assert queue_depth(broker_url, name) == 0


def test_a_refused_retry_copy_does_not_hot_loop(
    broker_url: str, vhost: str, name: str, make_driver: MakeDriver
) -> None:
    policy = f"{name}-full"
    rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        policy,
        f"^{name}-wait-",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    calls: list[int] = []

    def retry(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise Retry(0.1)

    subscriber = make_driver()
    subscriber.register(retry, name, [f"{name}.#"], max_retries=5)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    try:
        elapsed = subscriber.run_for(TIMEOUT)
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, policy)
    assert elapsed < RETURNS_WITHIN
    assert 1 <= len(calls) <= 2 * TIMEOUT, f"the handler ran {len(calls)} times in {TIMEOUT} s"
    assert set(calls) == {0}
    assert queue_depth(broker_url, name) == 1


def test_an_async_handler_is_awaited(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    finished: list[DomainEvent] = []

    async def handle(event: DomainEvent) -> None:
        await asyncio.sleep(0.05)
        finished.append(event)

    subscriber = make_subscriber()
    subscriber.register(handle, name, [f"{name}.#"])
    sent = publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    consume_until(subscriber, lambda: bool(finished), timeout=10, settle=0.3)
    assert finished == [sent]
    assert queue_depth(broker_url, name) == 0


def test_a_failing_async_handler_dead_letters_the_event(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    async def handle(event: DomainEvent) -> None:
        await asyncio.sleep(0)
        raise KeyError("async failure")

    subscriber = make_subscriber()
    subscriber.register(handle, name, [f"{name}.#"], dead_letter=True)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 1, timeout=10)
    [(_, properties, _)] = get_all(broker_url, f"{name}-dl")
    assert properties.headers[EXCEPTION_TYPE_HEADER] == "KeyError"


def test_stop_consuming_before_start_consuming_is_honoured(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    handled: list[DomainEvent] = []
    subscriber = make_subscriber()
    subscriber.register(handled.append, name, [f"{name}.#"])
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    subscriber.stop_consuming()
    started = time.monotonic()
    subscriber.start_consuming(timeout=10)
    assert time.monotonic() - started < 2, "start_consuming ignored the earlier stop"
    assert handled == []
    assert queue_depth(broker_url, name) == 1


def test_a_copy_whose_confirm_never_comes_makes_the_subscriber_reconnect_not_freeze(
    broker_url: str, vhost: str, name: str, make_driver: MakeDriver
) -> None:
    proxy = FreezingProxy()
    proxy.start()
    try:
        calls: list[int] = []

        def fail(event: DomainEvent) -> None:
            calls.append(event.retries)
            if len(calls) == 1:
                proxy.freeze()  # the confirm of the dead-letter copy never arrives
            raise ValueError("fails")

        subscriber = make_driver(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", publish_timeout=2.0
        )
        subscriber.register(fail, name, [f"{name}.#"], dead_letter=True)
        publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
        started = time.monotonic()
        # Delivered again after the copy timed out and the subscriber reconnected.
        subscriber.run_until(lambda: len(calls) >= 2, timeout=15, settle=0.5)
        assert time.monotonic() - started < 25, "the subscriber froze on its way out"
    finally:
        proxy.stop()
    # The first copy was stored (only its confirm was withheld) and the second
    # was confirmed: at least once in the dead-letter queue, none left behind.
    assert queue_depth(broker_url, f"{name}-dl") >= 1
    assert queue_depth(broker_url, name) == 0


# Another publisher's headers and a careless Retry subclass ---------------------------------
@pytest.mark.parametrize("routing_key_header", ["a" * 300, "user.*", "", "x..y"])
def test_a_routing_key_header_that_is_no_routing_key_is_ignored(
    broker_url: str, name: str, make_driver: MakeDriver, routing_key_header: str
) -> None:
    handled: list[DomainEvent] = []
    subscriber = make_driver()
    subscriber.register(handled.append, name, [f"{name}.#"], dead_letter=True)
    send_to_queue(broker_url, name, b"not json", {ROUTING_KEY_HEADER: routing_key_header})
    after = publish_domain_event(f"{name}.after", {}, connection_settings=broker_url)
    subscriber.run_for(3)  # must not raise
    assert handled == [after]
    assert queue_depth(broker_url, name) == 0
    assert [body for _, _, body in get_all(broker_url, f"{name}-dl")] == [b"not json"]


def test_a_retry_subclass_without_a_delay_is_dead_lettered_not_a_hot_loop(
    broker_url: str, name: str, make_driver: MakeDriver
) -> None:
    calls: list[int] = []

    def handler(event: DomainEvent) -> None:
        calls.append(event.retries)
        raise RetryWithoutDelay("later")

    subscriber = make_driver()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    subscriber.run_for(3)
    assert calls == [0]
    letters = get_all(broker_url, f"{name}-dl")
    assert len(letters) == 1
    assert "RetryWithoutDelay" in str(letters[0][1].headers[EXCEPTION_TYPE_HEADER])


def test_subscribers_forked_after_connecting_each_consume_on_a_connection_of_their_own(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # Competing consumers started with multiprocessing (fork) from one configured subscriber.
    subscriber = make_subscriber()
    subscriber.register(lambda event: None, name, [f"{name}.#"])
    for number in range(40):
        publish_domain_event(f"{name}.x", {"n": number}, connection_settings=broker_url)

    def child() -> None:
        try:
            subscriber.start_consuming(timeout=3)
        except BaseException:
            os._exit(1)
        os._exit(0)

    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=child) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert [process.exitcode for process in processes] == [0, 0]
    assert queue_depth(broker_url, name) == 0
