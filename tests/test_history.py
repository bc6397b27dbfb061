"""History on the real broker: a new subscriber reads the archive, then goes live, each event once.

Each test has an exchange (and archive) of its own, so that nothing else published on the
broker lands in it. Every test runs once per driver (pika and aio-pika).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pika
import pytest

from domain_event_broker import DomainEvent, Publisher, Retry
from domain_event_broker.history import ArchiveUnavailable, disable_archive, enable_archive
from drivers import Driver

HERE = Path(__file__).parent
KEYS = ("order.placed", "order.paid", "user.registered")  # the subscriber binds order.*


@pytest.fixture
def exchange(broker_url: str) -> Iterator[str]:
    """An exchange with its archive on, removed afterwards."""
    name = f"history-{uuid.uuid4().hex[:8]}"
    enable_archive(broker_url, exchange=name)
    yield name
    disable_archive(broker_url, exchange=name)
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        connection.channel().exchange_delete(name)


def _publish(publisher: Publisher, number: int) -> DomainEvent:
    event = DomainEvent(KEYS[number % 3], {"n": number})
    publisher.publish(event.to_json(), event.routing_key)
    return event


class Handled:
    """What a handler saw: uuids in order, and the numbers per routing key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uuids: list[str] = []
        self.numbers: dict[str, list[int]] = {}

    def __call__(self, event: DomainEvent) -> None:
        with self.lock:
            self.uuids.append(event.uuid_string)
            self.numbers.setdefault(event.routing_key, []).append(event.data["n"])


def test_a_new_subscriber_gets_every_event_after_the_mark_once_then_live_ones(
    make_driver: Callable[..., Driver], broker_url: str, exchange: str, name: str
) -> None:
    publisher = Publisher(broker_url, exchange=exchange)
    before = [_publish(publisher, number) for number in range(1000)]
    time.sleep(1.1)  # timestamps have sub-second precision, arrival times whole seconds
    mark = datetime.now(timezone.utc)
    after = [_publish(publisher, number) for number in range(1000, 2000)]

    live: list[DomainEvent] = []
    keep_publishing = threading.Event()
    keep_publishing.set()

    def publish_live() -> None:  # 200 events a second while the subscriber starts and reads
        live_publisher = Publisher(broker_url, exchange=exchange)
        number = 2000
        while keep_publishing.is_set():
            live.append(_publish(live_publisher, number))
            number += 1
            time.sleep(0.005)
        live_publisher.disconnect()

    thread = threading.Thread(target=publish_live)
    thread.start()
    handled = Handled()
    driver = make_driver(exchange=exchange)
    try:
        driver.register(handled, name, ["order.*"], start_from=mark)

        def caught_up() -> bool:
            if len(live) >= 600:  # three seconds of live events
                keep_publishing.clear()
            wanted = [event for event in after + live if event.routing_key != KEYS[2]]
            return not keep_publishing.is_set() and len(set(handled.uuids)) >= len(wanted)

        driver.run_until(caught_up, timeout=60, settle=1.0)
    finally:
        keep_publishing.clear()
        thread.join()
        publisher.disconnect()

    wanted = [event for event in after + live if event.routing_key != KEYS[2]]
    counts = Counter(handled.uuids)
    assert sorted(counts) == sorted(event.uuid_string for event in wanted)  # none missing, no other
    assert max(counts.values()) == 1  # none twice, across the hand-over too
    assert not {event.uuid_string for event in before} & set(counts)  # none from before the mark
    for key in KEYS[:2]:
        numbers = handled.numbers[key]
        assert numbers == sorted(numbers)  # per routing key in publish order

    # Restarted: no history again, only what is published from now on.
    again = Handled()
    restarted = make_driver(exchange=exchange)
    restarted.register(again, name, ["order.*"], start_from=mark)
    late_publisher = Publisher(broker_url, exchange=exchange)
    late = [_publish(late_publisher, number) for number in range(9000, 9010)]
    late_publisher.disconnect()
    restarted.run_until(lambda: len(again.uuids) >= 7, timeout=20, settle=1.0)
    assert sorted(again.uuids) == sorted(e.uuid_string for e in late if e.routing_key != KEYS[2])
    _delete_history_queues(broker_url, name)


def test_start_from_without_an_archive_is_a_clear_error(
    make_driver: Callable[..., Driver], name: str
) -> None:
    driver = make_driver(exchange=f"no-archive-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ArchiveUnavailable, match=r"has no archive.*archive enable"):
        driver.register(lambda event: None, name, ["order.*"], start_from="first")
        driver.run_for(5)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_stopped_in_the_middle_of_history_it_resumes_and_misses_nothing(
    driver_kind: str,
    broker_url: str,
    exchange: str,
    name: str,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    publisher = Publisher(broker_url, exchange=exchange)
    events = [_publish(publisher, number) for number in range(3000)]
    publisher.disconnect()
    wanted = {event.uuid_string for event in events if event.routing_key != KEYS[2]}
    journal = tmp_path / "journal"
    journal.touch()

    def handled() -> list[str]:
        return [line.split()[1] for line in journal.read_text().splitlines() if line]

    first = _start(driver_kind, broker_url, exchange, name, journal)
    _wait_for(lambda: len(handled()) >= 600, timeout=60)
    first.send_signal(stop)
    first.wait(30)
    before_kill = handled()
    assert len(set(before_kill)) < len(wanted)  # stopped in the middle of history

    second = _start(driver_kind, broker_url, exchange, name, journal)
    try:
        _wait_for(lambda: wanted <= set(handled()), timeout=90)
        time.sleep(1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    after_restart = handled()[len(before_kill) :]
    assert set(before_kill) | set(after_restart) == wanted  # nothing missing, nothing else
    repeated = set(before_kill) & set(after_restart)
    # Repeats are only of events handled just before the kill: the last ones of the first run.
    assert repeated <= set(before_kill[-(len(repeated) + 64) :])
    if stop is signal.SIGTERM:  # a graceful stop saves how far it got: at most the one in
        assert len(repeated) <= 1  # the handler as it stopped (asyncio) is handled again
    assert max(Counter(after_restart).values()) == 1
    _delete_history_queues(broker_url, name)


def test_two_processes_starting_at_once_read_history_once_between_them(
    driver_kind: str, broker_url: str, exchange: str, name: str, tmp_path: Path
) -> None:
    publisher = Publisher(broker_url, exchange=exchange)
    events = [_publish(publisher, number) for number in range(1500)]
    publisher.disconnect()
    wanted = {event.uuid_string for event in events if event.routing_key != KEYS[2]}
    journals = [tmp_path / "one", tmp_path / "two"]
    processes = [_start(driver_kind, broker_url, exchange, name, path) for path in journals]

    def handled() -> list[str]:
        return [
            line.split()[1]
            for path in journals
            if path.exists()
            for line in path.read_text().splitlines()
            if line
        ]

    try:
        _wait_for(lambda: wanted <= set(handled()), timeout=90)
        time.sleep(1.5)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)
    assert Counter(handled()) == Counter(wanted)  # each once, between them
    _delete_history_queues(broker_url, name)


def _start(
    driver: str, url: str, exchange: str, name: str, journal: Path
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "history_process.py"),
            driver,
            url,
            exchange,
            name,
            str(journal),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(0.05)


def _delete_history_queues(broker_url: str, name: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in (name, f"{name}-history", f"{name}-history-lock"):
            channel.queue_delete(queue)
        for exchange in (f"{name}-dlx", f"{name}-retry"):
            channel.exchange_delete(exchange)


def test_retry_and_dead_letter_rules_apply_to_history_events(
    make_driver: Callable[..., Driver], broker_url: str, exchange: str, name: str
) -> None:
    publisher = Publisher(broker_url, exchange=exchange)
    events = [
        DomainEvent("order.placed", {"n": n, "fate": fate})
        for n, fate in enumerate(["ok", "retry", "fail", "ok"])
    ]
    for event in events:
        publisher.publish(event.to_json(), event.routing_key)
    publisher.disconnect()
    calls: list[tuple[int, int]] = []

    def handler(event: DomainEvent) -> None:
        calls.append((event.data["n"], event.retries))
        if event.data["fate"] == "retry" and event.retries == 0:
            raise Retry(0.2)
        if event.data["fate"] == "fail":
            raise ValueError("a bug in the new service")

    driver = make_driver(exchange=exchange)
    driver.register(handler, name, ["order.*"], dead_letter=True, max_retries=1, start_from="first")
    driver.run_until(lambda: len(calls) >= 5, timeout=30, settle=1.0)
    assert sorted(calls) == [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0)]
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        method, _, body = channel.basic_get(f"{name}-dl", auto_ack=True)
        assert method is not None and DomainEvent.from_json(body) == events[2]
        assert channel.queue_declare(f"{name}-dl", passive=True).method.message_count == 0
        channel.queue_delete(f"{name}-dl")
        channel.exchange_delete(f"{name}-dlx")
    _delete_history_queues(broker_url, name)
