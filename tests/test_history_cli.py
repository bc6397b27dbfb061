"""``domain-events archive`` and ``domain-events history``, run as an operator runs them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pika
import pytest

from domain_event_broker import DomainEvent, Publisher, Subscriber
from support import consume_until
from test_cli import domain_events


@pytest.fixture
def exchange(broker_url: str) -> Iterator[str]:
    """An exchange of the test's own (its archive is the test's to turn on)."""
    name = f"history-cli-{uuid.uuid4().hex[:8]}"
    yield name
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.queue_delete(f"{name}-archive")
        channel.exchange_delete(name)


def _publish(url: str, exchange: str, *events: DomainEvent) -> list[DomainEvent]:
    publisher = Publisher(url, exchange=exchange)
    for event in events:
        publisher.publish(event.to_json(), event.routing_key)
    publisher.disconnect()
    return list(events)


def _enable(url: str, exchange: str) -> None:
    enabled = domain_events("--url", url, "archive", "enable", "--exchange", exchange)
    assert enabled.returncode == 0, enabled.stderr


def test_archive_enable_status_disable(broker_url: str, exchange: str) -> None:
    options = ("--url", broker_url)
    enabled = domain_events(
        *options,
        "archive",
        "enable",
        "--exchange",
        exchange,
        "--max-age",
        "30D",
        "--max-bytes",
        "1GB",
    )
    assert enabled.returncode == 0, enabled.stderr
    assert f"archive {exchange}-archive keeps the events of {exchange} for 30D" in enabled.stdout
    first = _publish(
        broker_url, exchange, *(DomainEvent("order.placed", {"n": n}) for n in range(5))
    )[0]

    status = domain_events(*options, "archive", "status", "--exchange", exchange)
    assert status.returncode == 0, status.stderr
    heading, row = status.stdout.splitlines()
    assert heading.split() == ["archive", "events", "oldest", "event", "max", "age", "max", "size"]
    oldest = datetime.fromtimestamp(first.timestamp, timezone.utc).isoformat(timespec="seconds")
    assert row.split() == [f"{exchange}-archive", "5", oldest, "30D", "1000000000", "bytes"]

    disabled = domain_events(*options, "archive", "disable", "--exchange", exchange)
    assert disabled.returncode == 0, disabled.stderr
    assert "(5 events)" in disabled.stdout
    gone = domain_events(*options, "archive", "status", "--exchange", exchange)
    assert gone.returncode == 1
    assert "has no archive" in gone.stderr and "archive enable" in gone.stderr


def test_history_show_prints_the_archive_in_order_and_consumes_nothing(
    broker_url: str, exchange: str
) -> None:
    assert (
        domain_events("--url", broker_url, "archive", "enable", "--exchange", exchange).returncode
        == 0
    )
    early = _publish(
        broker_url,
        exchange,
        DomainEvent("order.placed", {"n": 1}, domain_object_id="42"),
        DomainEvent("user.registered", {"n": 2}),
        DomainEvent("order.paid", {"n": 3}, domain_object_id="7"),
    )
    time.sleep(1.2)
    since = datetime.now(timezone.utc).isoformat()
    late = _publish(
        broker_url, exchange, DomainEvent("order.placed", {"n": 4}, domain_object_id="42")
    )
    options = ("--url", broker_url, "history", "show")

    every_order = domain_events(*options, "order.*", "--exchange", exchange, "--json")
    assert every_order.returncode == 0, every_order.stderr
    shown = [json.loads(line) for line in every_order.stdout.splitlines()]
    assert shown == [early[0].event_data, early[2].event_data, late[0].event_data]
    again = domain_events(*options, "order.*", "--exchange", exchange, "--json")
    assert again.stdout == every_order.stdout  # nothing was consumed

    of_42 = domain_events(*options, "#", "--exchange", exchange, "--object-id", "42", "--json")
    assert [json.loads(line)["data"] for line in of_42.stdout.splitlines()] == [{"n": 1}, {"n": 4}]
    recent = domain_events(*options, "#", "--exchange", exchange, "--since", since)
    assert recent.returncode == 0, recent.stderr
    assert len(recent.stdout.splitlines()) == 1
    assert late[0].uuid_string in recent.stdout and "order.placed" in recent.stdout
    assert "1 events" in recent.stderr


def test_history_replay_refeeds_a_window_to_one_subscriber(
    broker_url: str, exchange: str, name: str, make_subscriber: Callable[..., Subscriber]
) -> None:
    assert (
        domain_events("--url", broker_url, "archive", "enable", "--exchange", exchange).returncode
        == 0
    )
    handled: list[str] = []
    other: list[str] = []
    subscriber = make_subscriber(exchange=exchange)
    subscriber.register(lambda event: handled.append(event.uuid_string), name, ["order.*"])
    bystander = make_subscriber(exchange=exchange)
    bystander.register(lambda event: other.append(event.uuid_string), f"{name}-other", ["#"])
    events = _publish(
        broker_url,
        exchange,
        *(DomainEvent("order.placed" if n % 2 else "user.registered", {"n": n}) for n in range(6)),
    )
    orders = [event.uuid_string for event in events if event.routing_key == "order.placed"]
    consume_until(subscriber, lambda: len(handled) == 3, settle=0.3)
    consume_until(bystander, lambda: len(other) == 6, settle=0.3)
    options = ("--url", broker_url, "history", "replay", "--exchange", exchange, "--to", name)

    dry = domain_events(*options, "--since", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == f"would replay 3 events to {name}"

    replayed = domain_events(*options, "--since", "1h")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 3 events to {name}" in replayed.stdout
    assert "3/3" in replayed.stderr  # the progress bar
    consume_until(subscriber, lambda: len(handled) == 6, settle=0.5)
    assert sorted(handled) == sorted(orders * 2)  # each order event once more
    bystander.start_consuming(timeout=1.0)
    assert len(other) == 6  # nobody else got the replay

    missing = domain_events(*options[:-1], f"{name}-missing", "--since", "1h")
    assert missing.returncode == 2
    assert f"there is no subscriber '{name}-missing'" in missing.stderr


def test_history_show_and_replay_until_stop_after_the_window(
    broker_url: str, exchange: str, name: str, make_subscriber: Callable[..., Subscriber]
) -> None:
    """A window of six events, then a long archive after --until: both commands stop once
    past the window (well before a read of the whole archive ends) and see only it."""
    _enable(broker_url, exchange)
    handled: list[str] = []
    subscriber = make_subscriber(exchange=exchange)
    subscriber.register(lambda event: handled.append(event.uuid_string), name, ["order.*"])
    subscriber.start_consuming(timeout=0.5)  # its queue exists: replay refuses a stranger
    window = _publish(
        broker_url,
        exchange,
        *(DomainEvent("order.placed" if n % 2 else "user.registered", {"n": n}) for n in range(6)),
    )
    time.sleep(1.1)
    until = datetime.now(timezone.utc).isoformat()
    time.sleep(3.0)  # what follows is stamped well after --until
    publisher = Publisher(broker_url, exchange=exchange)
    publisher.publish_many(DomainEvent("user.registered", {"n": n}) for n in range(40000))
    publisher.disconnect()
    show = ("--url", broker_url, "history", "show", "--exchange", exchange, "--json")

    started = time.monotonic()
    nothing = domain_events(*show, "no.such.event", timeout=120)  # read to the end, none shown
    whole_read = time.monotonic() - started
    assert nothing.returncode == 0, nothing.stderr
    assert "0 events" in nothing.stderr
    started = time.monotonic()
    shown = domain_events(*show, "#", "--until", until, timeout=120)
    took = time.monotonic() - started
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line) for line in shown.stdout.splitlines()] == [
        event.event_data for event in window
    ]
    assert took < whole_read / 2, f"--until took {took:.1f} s, the whole archive {whole_read:.1f} s"

    replay = ("--url", broker_url, "history", "replay", "--exchange", exchange, "--to", name)
    started = time.monotonic()
    dry = domain_events(*replay, "--since", "1h", "--until", until, "--dry-run", timeout=120)
    assert time.monotonic() - started < whole_read / 2
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == f"would replay 3 events to {name}"
    replayed = domain_events(*replay, "--since", "1h", "--until", until, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 3 events to {name}" in replayed.stdout
    orders = [event.uuid_string for event in window if event.routing_key == "order.placed"]
    consume_until(subscriber, lambda: all(handled.count(uuid) == 2 for uuid in orders), settle=0.5)
    assert sorted(handled) == sorted(orders * 2)  # the window's order events once more, no other


def test_subscribers_and_delete_while_a_hand_over_holds_its_lock(
    broker_url: str, exchange: str, name: str
) -> None:
    """A history lock is another connection's exclusive queue: AMQP will not even count it."""
    holder = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = holder.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, exchange, "order.*")
        channel.queue_declare(f"{name}-history", durable=True, arguments={"x-max-length": 1})
        channel.queue_declare(f"{name}-history-lock", exclusive=True)
        options = ("--url", broker_url)

        listed = domain_events(*options, "subscribers", "--json")
        assert listed.returncode == 0, listed.stderr
        deleted = domain_events(*options, "delete", name, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        assert f"{name}-history-lock is held by a running process" in deleted.stdout
        for queue in (name, f"{name}-history"):
            with pytest.raises(pika.exceptions.ChannelClosedByBroker):
                holder.channel().queue_declare(queue, passive=True)
    finally:
        holder.close()
