"""One behaviour suite, run against RabbitMQ and against the in-memory test broker.

Whatever passes here on ``memory`` is what users' own tests can rely on from
``domain_event_broker.testing.InMemoryBroker``: it behaves as RabbitMQ does.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pika
import pytest

from domain_event_broker import DomainEvent, Retry, Subscriber, publish_domain_event, replay
from domain_event_broker.testing import InMemoryBroker
from support import consume_until, rabbitmqctl


class Backend(Protocol):
    def register(
        self,
        handler: Callable[[DomainEvent], object],
        name: str,
        binding_keys: list[str],
        **options: Any,
    ) -> None: ...
    def publish(self, routing_key: str, data: dict[str, Any]) -> DomainEvent: ...
    def run_until(self, done: Callable[[], bool]) -> None: ...
    def dead_letters(self, name: str) -> list[DomainEvent]: ...
    def replay_all(self, name: str) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self.broker = InMemoryBroker()

    def register(
        self,
        handler: Callable[[DomainEvent], object],
        name: str,
        binding_keys: list[str],
        **options: Any,
    ) -> None:
        self.broker.register(handler, name, binding_keys, **options)

    def publish(self, routing_key: str, data: dict[str, Any]) -> DomainEvent:
        with self.broker:
            return publish_domain_event(routing_key, data)  # as the code under test would

    def run_until(self, done: Callable[[], bool]) -> None:
        self.broker.run()
        assert done()

    def dead_letters(self, name: str) -> list[DomainEvent]:
        return [letter.event for letter in self.broker.dead_letters(name)]

    def replay_all(self, name: str) -> None:
        self.broker.replay_all(name)


class RabbitBackend:
    def __init__(self, broker_url: str, make_subscriber: Callable[..., Subscriber]) -> None:
        self.broker_url = broker_url
        self.subscriber = make_subscriber()

    def register(
        self,
        handler: Callable[[DomainEvent], object],
        name: str,
        binding_keys: list[str],
        **options: Any,
    ) -> None:
        self.subscriber.register(handler, name, binding_keys, **options)

    def publish(self, routing_key: str, data: dict[str, Any]) -> DomainEvent:
        return publish_domain_event(routing_key, data, connection_settings=self.broker_url)

    def run_until(self, done: Callable[[], bool]) -> None:
        consume_until(self.subscriber, done, timeout=20, settle=0.3)

    def dead_letters(self, name: str) -> list[DomainEvent]:
        letters = replay.list_dead_letters(name, self.broker_url)
        return [letter.event for letter in letters if letter.event is not None]

    def replay_all(self, name: str) -> None:
        replay.replay_all(name, connection_settings=self.broker_url)


@pytest.fixture(params=["memory", "rabbitmq", "rabbitmq-asyncio"])
def backend(
    request: pytest.FixtureRequest, broker_url: str, make_subscriber: Callable[..., Subscriber]
) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
    elif request.param == "rabbitmq-asyncio":
        from aio.helpers import AioBackend  # the asyncio API (AsyncSubscriber), same rules

        aio_backend = AioBackend(broker_url)
        try:
            yield aio_backend
        finally:
            aio_backend.close()
    else:
        yield RabbitBackend(broker_url, make_subscriber)


def test_wildcards_route_like_a_topic_exchange(backend: Backend, name: str) -> None:
    one_word: list[str] = []
    any_words: list[str] = []
    backend.register(lambda e: one_word.append(e.routing_key), f"{name}-a", [f"{name}.user.*"])
    backend.register(lambda e: any_words.append(e.routing_key), f"{name}-b", [f"{name}.#"])
    keys = [f"{name}.user.registered", f"{name}.user.registered.eu", f"{name}.order.paid"]
    for key in keys:
        backend.publish(key, {})
    backend.run_until(lambda: len(any_words) == 3)
    assert one_word == [f"{name}.user.registered"]
    assert any_words == keys


def test_retries_count_up_and_the_event_succeeds(backend: Backend, name: str) -> None:
    seen: list[int] = []

    def flaky(event: DomainEvent) -> None:
        seen.append(event.retries)
        if event.retries < 2:
            raise Retry(0.1)

    backend.register(flaky, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    backend.publish(f"{name}.x", {"n": 1})
    backend.run_until(lambda: len(seen) == 3)
    assert seen == [0, 1, 2]
    assert backend.dead_letters(name) == []


def test_over_max_retries_the_event_is_dead_lettered(backend: Backend, name: str) -> None:
    seen: list[int] = []

    def always_retry(event: DomainEvent) -> None:
        seen.append(event.retries)
        raise Retry(0.1)

    backend.register(always_retry, name, [f"{name}.#"], dead_letter=True, max_retries=2)
    sent = backend.publish(f"{name}.x", {"n": 1})
    backend.run_until(lambda: len(backend.dead_letters(name)) == 1)
    assert seen == [0, 1, 2]
    assert backend.dead_letters(name) == [sent]


def test_a_crash_dead_letters_at_once(backend: Backend, name: str) -> None:
    calls: list[DomainEvent] = []

    def crash(event: DomainEvent) -> None:
        calls.append(event)
        raise RuntimeError("bug")

    backend.register(crash, name, [f"{name}.#"], dead_letter=True, max_retries=5)
    sent = backend.publish(f"{name}.x", {"n": 1})
    backend.run_until(lambda: len(backend.dead_letters(name)) == 1)
    assert calls == [sent]
    assert backend.dead_letters(name) == [sent]


def test_replay_goes_back_to_that_subscriber_only(backend: Backend, name: str) -> None:
    failing: list[int] = []
    bystander: list[DomainEvent] = []

    def fails_once(event: DomainEvent) -> None:
        failing.append(event.retries)
        if len(failing) == 1:
            raise RuntimeError("first time fails")

    backend.register(fails_once, name, [f"{name}.#"], dead_letter=True, max_retries=3)
    backend.register(bystander.append, f"{name}-other", [f"{name}.#"])
    sent = backend.publish(f"{name}.x", {"n": 1})
    backend.run_until(lambda: len(backend.dead_letters(name)) == 1 and len(bystander) == 1)
    backend.replay_all(name)
    backend.run_until(lambda: len(failing) == 2)
    assert failing == [0, 0], "a replayed event starts with retries == 0"
    assert bystander == [sent], "the replay reached another subscriber"
    assert backend.dead_letters(name) == []


def test_a_wait_queue_left_with_other_arguments_stalls_nothing_and_heals_once_removed(
    backend: Backend, broker_url: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's leftover: the wait queue of a 1 s delay, declared with another TTL.
    if isinstance(backend, MemoryBackend):
        pytest.skip("the in-memory broker keeps no queues an operator could leave behind")
    leftover = f"{name}-wait-1000"
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        connection.channel().queue_declare(
            leftover, durable=True, arguments={"x-message-ttl": 5000}
        )
    calls: list[tuple[int, float]] = []

    def retry_once(event: DomainEvent) -> None:
        calls.append((event.retries, time.monotonic()))
        if len(calls) == 3:  # the operator removes the leftover meanwhile
            with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
                connection.channel().queue_delete(leftover)
        if event.retries == 0:
            raise Retry(1.0)

    try:
        backend.register(retry_once, name, [f"{name}.#"], dead_letter=True, max_retries=3)
        sent = backend.publish(f"{name}.x", {"n": 1})
        with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
            backend.run_until(lambda: any(retries == 1 for retries, _ in calls))
    finally:
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            connection.channel().queue_delete(leftover)
    # While the copy was refused the event came back to its queue after a pause (no hot
    # loop, never lost); once the queue was gone the retry went through and was handled.
    assert [retries for retries, _ in calls][-1] == 1
    assert [retries for retries, _ in calls][:3] == [0, 0, 0]
    assert calls[1][1] - calls[0][1] >= 0.9, "the first refusal pauses the event a second"
    assert backend.dead_letters(name) == []
    refusals = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
    assert refusals and sent.uuid_string in refusals[0]


def test_a_refused_copy_pauses_its_event_but_no_other(
    backend: Backend, vhost: str, broker_url: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The dead-letter queue takes nothing (an operator's policy: length 0, reject-publish):
    # RabbitMQ refuses every copy. The refused event goes back to its queue after growing
    # pauses; another subscriber's events are handled meanwhile without waiting on them.
    if isinstance(backend, MemoryBackend):
        pytest.skip("the in-memory broker has no policies")
    policy = f"{name}-full"
    rabbitmqctl(
        "set_policy", "-p", vhost, "--apply-to", "queues", policy, f"^{name}-a-dl$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )  # fmt: skip
    crashes: list[float] = []
    handled: list[float] = []

    def crash(event: DomainEvent) -> None:
        crashes.append(time.monotonic())
        raise RuntimeError("bug")

    try:
        backend.register(crash, f"{name}-a", [f"{name}.a"], dead_letter=True)
        backend.register(lambda e: handled.append(time.monotonic()), f"{name}-b", [f"{name}.b"])
        backend.publish(f"{name}.a", {})
        published: list[float] = []

        def third_refusal_then_others_handled() -> bool:
            if len(crashes) >= 3 and not published:  # pauses now 1, 2, then 4 s
                published.append(time.monotonic())
                for n in range(3):  # from here: the asyncio backend's loop is running this
                    publish_domain_event(f"{name}.b", {"n": n}, connection_settings=broker_url)
            return len(handled) == 3

        with caplog.at_level(logging.ERROR, logger="domain_event_broker"):
            backend.run_until(third_refusal_then_others_handled)
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, policy)
    pauses = [later - earlier for earlier, later in itertools.pairwise(crashes)]
    assert pauses[:2] >= [0.9, 1.9]  # at most one redelivery a second, then fewer
    assert max(handled) - published[0] < 1.5, "the other subscriber waited on the pause"
    refusals = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(refusals) == 1, "one error per burst of refusals"
