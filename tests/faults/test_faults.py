"""Fault injection on the real broker: nothing accepted is lost.

Each stream case prints one line: published / accepted / refused / handled /
duplicates / lost / longest pause in handling (the recovery time).
"""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from domain_event_broker import (
    BrokerUnavailable,
    DomainEvent,
    Publisher,
    PublishError,
    Subscriber,
    publish_domain_event,
)
from support import TcpProxy, consume_until, queue_depth, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]
SUBSCRIBER_PROCESS = Path(__file__).with_name("subscriber_process.py")


@dataclass
class StreamReport:
    published: int
    accepted: int
    refused: int
    handled: int
    duplicates: int
    lost: int
    longest_pause: float

    def line(self, case: str) -> str:
        return (
            f"{case}: published={self.published} accepted={self.accepted} "
            f"refused={self.refused} handled={self.handled} duplicates={self.duplicates} "
            f"lost={self.lost} recovery={self.longest_pause:.2f}s"
        )


def stream_with_fault(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    fault: Callable[[], None],
    total: int = 3000,
    rate: float = 600.0,
) -> StreamReport:
    """Publish ``total`` events at ``rate``/s while a subscriber handles them; run
    ``fault`` (in a thread) a third of the way in. Wait until every accepted event
    was handled (or 60 s passed) and report."""
    handled: Counter[str] = Counter()
    handled_at: list[float] = []
    lock = threading.Lock()

    def handle(event: DomainEvent) -> None:
        with lock:
            handled[event.uuid_string] += 1
            handled_at.append(time.monotonic())

    subscriber = make_subscriber()
    subscriber.register(handle, name, [f"{name}.#"])
    consumer = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 180})
    consumer.start()

    accepted: list[str] = []
    refused = 0
    fault_thread = threading.Thread(target=fault)
    publisher = Publisher(broker_url)
    started = time.monotonic()
    for number in range(total):
        if number == total // 3:
            fault_thread.start()
        event = DomainEvent(f"{name}.happened", {"n": number})
        try:
            publisher.publish_event(event)
            accepted.append(event.uuid_string)
        except Exception as error:  # a refused publish is what this test counts
            logging.getLogger(__name__).error("publish refused: %s", error)
            refused += 1
        pause = started + (number + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    fault_thread.join()
    publisher.disconnect()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(accepted) <= set(handled):
        time.sleep(0.05)
    time.sleep(0.3)  # late duplicates, if any
    subscriber.stop_consuming()
    consumer.join(30)
    assert not consumer.is_alive()
    gaps = [later - earlier for earlier, later in itertools.pairwise(handled_at)]
    return StreamReport(
        published=total,
        accepted=len(accepted),
        refused=refused,
        handled=len(handled),
        duplicates=sum(handled.values()) - len(handled),
        lost=len(set(accepted) - set(handled)),
        longest_pause=max(gaps, default=0.0),
    )


def test_connections_closed_twice_mid_stream_lose_nothing(
    broker_url: str,
    vhost: str,
    name: str,
    make_subscriber: MakeSubscriber,
    report_figures: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def close_twice() -> None:
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: first cut")
        time.sleep(1.0)
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: second cut")

    with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
        result = stream_with_fault(broker_url, name, make_subscriber, close_twice)
    report_figures(result.line("close_all_connections x2"))
    assert result.refused == 0
    assert result.lost == 0
    assert result.accepted == result.published
    subscriber_lines = [
        r.getMessage() for r in caplog.records if r.name == "domain_event_broker.subscriber"
    ]
    assert any("lost the connection" in line for line in subscriber_lines)
    assert any("reconnected" in line for line in subscriber_lines)
    assert all("guest:***@" in line for line in subscriber_lines)


@pytest.mark.disrupts_broker
def test_broker_stopped_for_seconds_mid_stream_loses_nothing(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    report_figures: Callable[[str], None],
) -> None:
    def restart_app() -> None:
        rabbitmqctl("stop_app")
        try:
            time.sleep(3)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")

    result = stream_with_fault(broker_url, name, make_subscriber, restart_app)
    report_figures(result.line("stop_app 3 s / start_app"))
    assert result.refused == 0
    assert result.lost == 0


def test_a_handler_that_finishes_after_its_channel_died_does_not_ack_on_the_new_one(
    broker_url: str,
    vhost: str,
    name: str,
    make_subscriber: MakeSubscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    in_handler = threading.Event()

    def slow_first_time(event: DomainEvent) -> None:
        calls.append(event.data["n"])
        if len(calls) == 1:
            in_handler.set()
            time.sleep(2.0)

    subscriber = make_subscriber()
    subscriber.register(slow_first_time, name, [f"{name}.#"])
    publish_domain_event(f"{name}.x", {"n": "first"}, connection_settings=broker_url)
    publish_domain_event(f"{name}.x", {"n": "second"}, connection_settings=broker_url)

    def cut_while_handling() -> None:
        in_handler.wait(10)
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: cut mid-handler")

    cutter = threading.Thread(target=cut_while_handling)
    cutter.start()
    with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
        consume_until(subscriber, lambda: calls.count("second") >= 1 and len(calls) >= 3, 20, 0.5)
    cutter.join()
    # The first event was redelivered and handled again; nothing was acked twice
    # or on the wrong channel (that would close the channel and reconnect again).
    assert calls.count("first") == 2
    assert calls.count("second") == 1
    assert queue_depth(broker_url, name) == 0
    reconnects = [
        r
        for r in caplog.records
        if r.name == "domain_event_broker.subscriber" and "lost the connection" in r.getMessage()
    ]
    assert len(reconnects) == 1


def _start_worker(
    broker_url: str, name: str, seconds: float, journal: Path
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(SUBSCRIBER_PROCESS), broker_url, name, str(seconds), str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(journal, f"ready - {process.pid}")
    return process


def _wait_for(journal: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and text in journal.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(
        f"{text!r} not in the journal: {journal.read_text() if journal.exists() else ''}"
    )


@pytest.fixture
def delete_queue_afterwards(broker_url: str, name: str) -> Iterator[None]:
    yield
    from support import delete_queues

    delete_queues(broker_url, name)


def test_a_worker_killed_mid_handler_leaves_the_event_to_the_next_worker(
    broker_url: str, name: str, tmp_path: Path, delete_queue_afterwards: None
) -> None:
    journal = tmp_path / "journal"
    doomed = _start_worker(broker_url, name, 30, journal)
    event = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    _wait_for(journal, f"start {event.uuid_string} {doomed.pid}")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    successor = _start_worker(broker_url, name, 0, journal)
    try:
        _wait_for(journal, f"done {event.uuid_string} {successor.pid}")
    finally:
        successor.send_signal(signal.SIGTERM)
        successor.wait(30)
    assert successor.returncode == 0
    assert queue_depth(broker_url, name) == 0


def test_sigterm_during_a_slow_handler_finishes_it_acks_once_and_exits_0(
    broker_url: str, name: str, tmp_path: Path, delete_queue_afterwards: None
) -> None:
    journal = tmp_path / "journal"
    worker = _start_worker(broker_url, name, 2.0, journal)
    first = publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    second = publish_domain_event(f"{name}.x", {"n": 2}, connection_settings=broker_url)
    _wait_for(journal, f"start {first.uuid_string}")
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    lines = journal.read_text().splitlines()
    assert sum(line.startswith(f"done {first.uuid_string}") for line in lines) == 1
    assert not any(second.uuid_string in line for line in lines), "took a new event after SIGTERM"
    assert f"stopped - {worker.pid}" in lines
    # The finished event was acked; the one never started waits for the next worker.
    assert queue_depth(broker_url, name) == 1


def test_a_second_sigterm_stops_at_once_and_the_event_is_redelivered(
    broker_url: str, name: str, tmp_path: Path, delete_queue_afterwards: None
) -> None:
    journal = tmp_path / "journal"
    worker = _start_worker(broker_url, name, 30, journal)
    event = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    _wait_for(journal, f"start {event.uuid_string}")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=15)
    assert time.monotonic() - started < 5
    assert worker.returncode != 0
    assert f"done {event.uuid_string}" not in journal.read_text()
    assert queue_depth(broker_url, name) == 1


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    tcp_proxy = TcpProxy()
    tcp_proxy.start()
    yield tcp_proxy
    tcp_proxy.stop()


def test_publish_rides_out_a_short_outage_and_raises_clearly_after_publish_timeout(
    broker_url: str, vhost: str, name: str, proxy: TcpProxy, make_subscriber: MakeSubscriber
) -> None:
    received: list[int] = []
    subscriber = make_subscriber()
    subscriber.register(lambda e: received.append(e.data["n"]), name, [f"{name}.#"])
    subscriber.stop_consuming()
    publisher = Publisher(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", publish_timeout=2.0)
    publisher.publish_event(DomainEvent(f"{name}.x", {"n": 1}))

    # A short outage (shorter than publish_timeout) is ridden out.
    proxy.stop()
    threading.Timer(0.8, proxy.start).start()
    publisher.publish_event(DomainEvent(f"{name}.x", {"n": 2}))

    # A long one ends in a clear error after publish_timeout.
    proxy.stop()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised:
        publisher.publish_event(DomainEvent(f"{name}.x", {"n": 3}))
    assert 1.9 < time.monotonic() - started < 4
    assert "could not reconnect in time" in str(raised.value)
    assert ":guest@" not in str(raised.value)

    # Back up: the publisher recovers by itself.
    proxy.start()
    # The next reconnect attempt may be a full backoff (up to 3 s) away.
    publisher.publish_timeout = 10.0
    publisher.publish_event(DomainEvent(f"{name}.x", {"n": 4}))
    publisher.disconnect()
    restarted = make_subscriber()
    restarted.register(lambda e: received.append(e.data["n"]), name, [f"{name}.#"])
    consume_until(restarted, lambda: 4 in received, settle=0.3)
    assert sorted(received) == [1, 2, 4]


def test_start_consuming_keeps_its_deadline_across_reconnects(
    vhost: str, name: str, proxy: TcpProxy, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}")
    subscriber.register(print, name, [f"{name}.#"])
    proxy.stop()
    threading.Timer(1.0, proxy.start).start()
    started = time.monotonic()
    subscriber.start_consuming(timeout=3.0)
    assert 2.9 < time.monotonic() - started < 5


@pytest.mark.disrupts_broker
def test_a_broker_blocking_publishers_gives_a_clear_error_and_publishing_resumes(
    broker_url: str, name: str
) -> None:
    watermark = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    publisher = Publisher(broker_url, publish_timeout=2.0)
    publisher.publish_event(DomainEvent(f"{name}.before"))
    rabbitmqctl("set_vm_memory_high_watermark", "0.000001")  # a memory alarm, now
    try:
        time.sleep(1.0)
        with pytest.raises(PublishError, match=r"blocking publishers .*memory"):
            publisher.publish_event(DomainEvent(f"{name}.during"))
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", watermark)
    started = time.monotonic()
    publisher.publish_event(DomainEvent(f"{name}.after"))
    assert time.monotonic() - started < 5
    publisher.disconnect()
