"""The in-memory broker users put in their own tests."""

from __future__ import annotations

import time
import warnings
from datetime import timedelta

import pytest

from domain_event_broker import (
    DomainEvent,
    EventNotSerializable,
    InvalidRoutingKey,
    Retry,
    publish_domain_event,
)
from domain_event_broker.testing import InMemoryBroker, UnroutedEventWarning


def test_retries_run_on_a_virtual_clock() -> None:
    seen: list[tuple[int, float]] = []
    with InMemoryBroker() as broker:

        def slow_retry(event: DomainEvent) -> None:
            seen.append((event.retries, broker.clock))
            if event.retries == 0:
                raise Retry(3600)

        broker.register(slow_retry, "sync", ["user.*"], max_retries=1)
        publish_domain_event("user.registered", {})
        started = time.monotonic()
        broker.run()
    assert time.monotonic() - started < 1
    assert seen == [(0, 0.0), (1, 3600.0)]


def test_published_events_are_recorded_and_nothing_reaches_rabbitmq() -> None:
    with InMemoryBroker() as broker:
        # An unreachable URL: the event must not even try to go there.
        event = publish_domain_event(
            "user.registered", {"id": 1}, connection_settings="amqp://127.0.0.1:5999/%2F"
        )
    assert broker.published == [event]


def test_leaving_the_block_restores_publishing(broker_url: str) -> None:
    with InMemoryBroker():
        pass
    with pytest.raises(Exception, match="cannot reach RabbitMQ"):
        publish_domain_event("user.registered", {}, connection_settings="amqp://127.0.0.1:5999/%2F")


def test_bad_events_fail_as_they_would_against_rabbitmq() -> None:
    with InMemoryBroker():
        with pytest.raises(InvalidRoutingKey):
            publish_domain_event("user.*", {})
        with pytest.raises(EventNotSerializable):
            publish_domain_event("user.registered", {"x": object()})


def test_undelivered_events_can_be_inspected() -> None:
    with InMemoryBroker() as broker:
        broker.register(print, "printer", ["user.#"])
        sent = publish_domain_event("user.registered", {"id": 2})
        assert broker.waiting("printer") == [sent]
    with pytest.raises(ValueError, match="no dead-letter queue"):
        broker.dead_letters("printer")


def test_a_retry_loop_is_reported_not_hung() -> None:
    broker = InMemoryBroker()
    broker.register(lambda e: (_ for _ in ()).throw(Retry(1)), "loop", ["#"], max_retries=10**9)
    broker.publish(DomainEvent("a.b"))
    with pytest.raises(RuntimeError, match="retry loop"):
        broker.run(max_deliveries=100)


def test_an_async_handler_is_awaited() -> None:
    import asyncio

    done: list[int] = []

    async def handle(event: DomainEvent) -> None:
        await asyncio.sleep(0)
        done.append(event.data["n"])

    broker = InMemoryBroker()
    broker.register(handle, "async", ["a.*"])
    broker.publish(DomainEvent("a.b", {"n": 1}))
    assert broker.run() == 1
    assert done == [1]


def test_an_async_handler_is_awaited_from_inside_a_running_loop() -> None:
    import asyncio

    done: list[int] = []

    async def handle(event: DomainEvent) -> None:
        await asyncio.sleep(0)
        done.append(event.data["n"])

    async def a_users_async_test() -> None:
        broker = InMemoryBroker()
        broker.register(handle, "async", ["a.*"])
        broker.publish(DomainEvent("a.b", {"n": 2}))
        broker.run()

    asyncio.run(a_users_async_test())
    assert done == [2]


def test_failures_are_decided_as_the_subscriber_decides() -> None:
    class Meltdown(BaseException):
        pass

    def handle(event: DomainEvent) -> None:
        if event.data["kind"] == "base":
            raise Meltdown("hot")
        raise Retry(float(event.data["delay"]))

    broker = InMemoryBroker()
    broker.register(handle, "rules", ["r.*"], dead_letter=True, max_retries=3)
    broker.publish(DomainEvent("r.x", {"kind": "base"}))
    broker.publish(DomainEvent("r.x", {"kind": "retry", "delay": "nan"}))
    broker.run()
    # A BaseException dead-letters like an exception; Retry(nan) fails at construction.
    assert [type(letter.exception).__name__ for letter in broker.dead_letters("rules")] == [
        "Meltdown",
        "ValueError",
    ]


def test_a_handler_asking_to_stop_stops_the_run_and_keeps_the_event() -> None:
    broker = InMemoryBroker()

    def stop(event: DomainEvent) -> None:
        raise KeyboardInterrupt

    broker.register(stop, "stopper", ["s.*"], dead_letter=True)
    sent = broker.publish(DomainEvent("s.x"))
    with pytest.raises(KeyboardInterrupt):
        broker.run()
    assert broker.waiting("stopper") == [sent]
    assert broker.dead_letters("stopper") == []


def test_an_event_no_binding_matches_warns_of_a_typo() -> None:
    with InMemoryBroker() as broker:
        broker.register(print, "welcome-mailer", ["user.registered"])
        with pytest.warns(UnroutedEventWarning, match=r"'user\.registred'.*user\.registered"):
            publish_domain_event("user.registred", {"id": 1})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            publish_domain_event("user.registered", {"id": 2})  # matched: no warning
    with InMemoryBroker(), warnings.catch_warnings():
        warnings.simplefilter("error")
        publish_domain_event("order.placed", {})  # nobody registered: a publisher's own test


@pytest.mark.parametrize("name", ["user.*", "orders.#", "*"])
def test_a_binding_key_in_the_name_s_place_is_refused(name: str) -> None:
    with InMemoryBroker() as broker, pytest.raises(ValueError, match="were they swapped"):
        broker.register(print, name, ["nc-x"])


def test_start_from_reads_what_was_published_then_live_events() -> None:
    seen: list[int] = []
    with InMemoryBroker() as broker:
        old = broker.publish_domain_event("order.placed", {"n": 0}, timestamp=1.0)
        broker.publish_domain_event("order.placed", {"n": 1})
        broker.publish_domain_event("user.registered", {"n": 2})
        broker.register(
            lambda event: seen.append(event.data["n"]),
            "indexer",
            ["order.*"],
            start_from=timedelta(hours=1),
        )
        broker.publish_domain_event("order.paid", {"n": 3})
        broker.run()
    assert old.timestamp == 1.0
    assert seen == [1, 3]  # not the one older than an hour, not user.*, each once
