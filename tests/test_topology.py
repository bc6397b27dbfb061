"""Compatibility of names and arguments with releases 2.x-3.x, and clear mismatch errors."""

from __future__ import annotations

from collections.abc import Callable

import pika
import pytest

from domain_event_broker import DomainEvent, Subscriber, TopologyMismatch, publish_domain_event
from support import consume_until, delete_queues, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]


def declare_like_the_old_library(
    broker_url: str, name: str, binding_keys: list[str], dead_letter: bool, retry_delay_ms: int
) -> None:
    """The declarations ``Subscriber.register`` and a retry of releases 2.x-3.x made."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        arguments = {}
        if dead_letter:
            channel.exchange_declare(f"{name}-dlx", exchange_type="topic")
            channel.queue_declare(f"{name}-dl", durable=True)
            for key in binding_keys:
                channel.queue_bind(f"{name}-dl", f"{name}-dlx", routing_key=key)
            arguments["x-dead-letter-exchange"] = f"{name}-dlx"
        channel.queue_declare(name, durable=True, arguments=arguments)
        for key in binding_keys:
            channel.queue_bind(name, "domain-events", routing_key=key)
        channel.exchange_declare(f"{name}-retry", exchange_type="topic")
        for key in binding_keys:
            channel.queue_bind(name, f"{name}-retry", routing_key=key)
        wait = f"{name}-delay-{retry_delay_ms}"
        channel.queue_declare(
            wait,
            durable=True,
            arguments={
                "x-dead-letter-exchange": f"{name}-retry",
                "x-message-ttl": retry_delay_ms,
                "x-expires": retry_delay_ms + 10000,
            },
        )
        channel.exchange_declare(wait, durable=True, auto_delete=True, exchange_type="topic")
        channel.queue_bind(wait, wait, routing_key="#")


def _listings(vhost: str, *names: str) -> list[list[str]]:
    """Queues, exchanges and bindings of each subscriber in ``names``, its name replaced by N.

    One listing for all: a wait queue expires 10 s after it was last declared,
    and rabbitmqctl can take seconds on a loaded machine.
    """
    rows = rabbitmqctl(
        "list_queues", "-q", "-p", vhost, "name", "durable", "auto_delete", "exclusive", "arguments"
    ).splitlines()
    rows += rabbitmqctl(
        "list_exchanges", "-q", "-p", vhost, "name", "type", "durable", "auto_delete"
    ).splitlines()
    rows += rabbitmqctl(
        "list_bindings", "-q", "-p", vhost, "source_name", "destination_name", "routing_key"
    ).splitlines()
    # RabbitMQ 4.x lists the default queue type as an argument of every classic queue.
    rows = [row.replace(',{"x-queue-type","classic"}', "") for row in rows]
    return [sorted(row.replace(name, "N") for row in rows if name in row) for name in names]


def _is_wait_queue(row: str) -> bool:
    return "N-delay-" in row or "N-wait-" in row


@pytest.mark.parametrize("dead_letter", [True, False])
def test_our_topology_is_exactly_that_of_the_old_library(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber, dead_letter: bool
) -> None:
    old, new = f"{name}o", f"{name}n"
    attempts: list[int] = []

    def retry_once(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            from domain_event_broker import Retry

            raise Retry(0.25)

    subscriber = make_subscriber()
    subscriber.register(retry_once, new, [f"{new}.*"], dead_letter=dead_letter, max_retries=1)
    publish_domain_event(f"{new}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(attempts) == 2)
    subscriber.stop_consuming()
    # Declared now, so that the old-style wait queue has not expired when both are listed.
    declare_like_the_old_library(broker_url, old, [f"{old}.*"], dead_letter, 250)
    listing_old, listing_new = _listings(vhost, old, new)
    # N, N-dl, N-dlx, N-retry and their bindings: exactly as 3.x declared them.
    assert [row for row in listing_new if not _is_wait_queue(row)] == [
        row for row in listing_old if not _is_wait_queue(row)
    ]
    assert listing_new, "nothing declared?"
    # Wait queues take a name of their own (3.x instances keep declaring theirs
    # with the old arguments) and route expired copies through the default
    # exchange straight to N: no exchange, no binding, no lease.
    assert [row.replace(" ", "") for row in listing_new if _is_wait_queue(row)] == [
        "\tN-wait-250\tN-wait-250",  # the default exchange's implicit binding
        'N-wait-250\ttrue\tfalse\tfalse\t[{"x-dead-letter-exchange",[]},'
        '{"x-dead-letter-routing-key","N"},{"x-message-ttl",250}]',
    ]
    delete_queues(broker_url, old, f"{old}-dl", f"{old}-delay-250", f"{new}-wait-250")


def test_a_subscriber_upgraded_in_place_keeps_its_queue_and_events(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    declare_like_the_old_library(broker_url, name, [f"{name}.*"], True, 1000)
    sent = publish_domain_event(f"{name}.waiting", {"n": 1}, connection_settings=broker_url)
    received: list[DomainEvent] = []
    subscriber = make_subscriber()
    subscriber.register(received.append, name, [f"{name}.*"], dead_letter=True, max_retries=3)
    consume_until(subscriber, lambda: bool(received))
    assert received == [sent]
    delete_queues(broker_url, f"{name}-delay-1000")


def test_the_old_library_can_still_declare_after_we_did(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # Rolling upgrade: old instances of the same service start next to new ones,
    # and retry with the same delay as we do.
    attempts: list[int] = []

    def retry_once(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            from domain_event_broker import Retry

            raise Retry(1.0)

    subscriber = make_subscriber()
    subscriber.register(retry_once, name, [f"{name}.*"], dead_letter=True, max_retries=3)
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: bool(attempts))
    declare_like_the_old_library(broker_url, name, [f"{name}.*"], True, 1000)
    consume_until(subscriber, lambda: len(attempts) == 2)
    assert attempts == [0, 1]
    delete_queues(broker_url, f"{name}-delay-1000", f"{name}-wait-1000")


def test_a_queue_with_other_arguments_is_a_clear_topology_mismatch(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    declare_like_the_old_library(broker_url, name, [f"{name}.*"], False, 1000)
    subscriber = make_subscriber()
    with pytest.raises(TopologyMismatch) as raised:
        subscriber.register(print, name, [f"{name}.*"], dead_letter=True)
    message = str(raised.value)
    assert f"queue '{name}'" in message
    assert "x-dead-letter-exchange" in message
    assert "migrate" in message.lower()
    # The subscriber is still usable for a correct registration.
    subscriber.register(print, f"{name}-other", [f"{name}.*"])
    delete_queues(broker_url, name, f"{name}-delay-1000")


def test_quorum_queues_are_opt_in_and_carry_at_least_once_dead_lettering(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    attempts: list[int] = []

    def retry_once(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            from domain_event_broker import Retry

            raise Retry(0.2)

    subscriber = make_subscriber()
    subscriber.register(
        retry_once, name, [f"{name}.*"], dead_letter=True, max_retries=1, queue_type="quorum"
    )
    publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: len(attempts) == 2)
    queues = {
        row.split("\t")[0]: row
        for row in rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "type", "arguments")
        .replace(" ", "")
        .splitlines()
    }
    assert "\tquorum\t" in queues[name]
    assert "\tquorum\t" in queues[f"{name}-dl"]
    wait_queue = queues[f"{name}-wait-200"]
    assert "\tquorum\t" in wait_queue
    assert '"x-dead-letter-strategy","at-least-once"' in wait_queue
    assert '"x-overflow","reject-publish"' in wait_queue
    assert "x-expires" not in wait_queue
    delete_queues(broker_url, f"{name}-wait-200")


def test_quorum_queues_cannot_be_exclusive(name: str, make_subscriber: MakeSubscriber) -> None:
    with pytest.raises(ValueError, match="quorum"):
        make_subscriber().register(print, name, ["a.b"], exclusive=True, queue_type="quorum")
