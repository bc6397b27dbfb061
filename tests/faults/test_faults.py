"""Fault injection on the real broker, through both drivers: nothing accepted is lost.

Every case runs once with the pika driver (``Publisher``/``Subscriber``) and once
with the aio-pika driver (``AsyncPublisher``/``AsyncSubscriber``), through the
seam in ``tests/drivers.py``. Each stream case prints one line: published /
accepted / refused / handled / duplicates / lost / longest pause in handling
(the recovery time).
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
from rabbit_cluster import RabbitCluster, throwaway_node

from domain_event_broker import (
    BrokerUnavailable,
    DomainEvent,
    PublishError,
    publish_domain_event,
)
from drivers import Driver, Publishing, publishing
from support import TcpProxy, queue_depth, rabbitmqctl

MakeDriver = Callable[..., Driver]
MakePublishing = Callable[..., Publishing]
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
    kind: str,
    broker_url: str,
    name: str,
    make_driver: MakeDriver,
    fault: Callable[[], None],
    total: int = 3000,
    rate: float = 600.0,
) -> StreamReport:
    """Publish ``total`` events at ``rate``/s while a subscriber handles them; run
    ``fault`` (in a thread) a third of the way in. Wait until every accepted event
    was handled (or 90 s passed) and report."""
    handled: Counter[str] = Counter()
    handled_at: list[float] = []
    lock = threading.Lock()

    def handle(event: DomainEvent) -> None:
        with lock:
            handled[event.uuid_string] += 1
            handled_at.append(time.monotonic())

    subscriber = make_driver(broker_url)
    subscriber.register(handle, name, [f"{name}.#"])
    consumer = threading.Thread(target=subscriber.run_for, args=(180,), name="stream-consumer")
    consumer.start()

    accepted: list[str] = []
    refused = 0
    fault_thread = threading.Thread(target=fault, name="fault")
    publisher = publishing(kind, broker_url)
    try:
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
    finally:
        publisher.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not set(accepted) <= set(handled):
            time.sleep(0.05)
        time.sleep(0.3)  # late duplicates, if any
        subscriber.stop()
        consumer.join(30)
    assert not consumer.is_alive(), "the subscriber did not stop"
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
    driver_kind: str,
    broker_url: str,
    vhost: str,
    name: str,
    make_driver: MakeDriver,
    report_figures: Callable[[str], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def close_twice() -> None:
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: first cut")
        time.sleep(1.0)
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: second cut")

    with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
        result = stream_with_fault(driver_kind, broker_url, name, make_driver, close_twice)
    report_figures(result.line(f"{driver_kind}: close_all_connections x2"))
    assert result.refused == 0
    assert result.lost == 0
    assert result.accepted == result.published
    outage_lines = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("domain_event_broker") and "subscriber" in r.name
    ]
    assert any("lost" in line for line in outage_lines), outage_lines
    assert any("reconnected" in line for line in outage_lines), outage_lines
    assert all(":guest@" not in line for line in outage_lines)
    assert all("guest:***@" in line for line in outage_lines if "RabbitMQ at" in line)


@pytest.fixture(scope="module")
def own_node() -> Iterator[RabbitCluster]:
    """A throw-away single node whose application a test may stop."""
    with throwaway_node("debfault", amqp_port=5691) as node:
        yield node


@pytest.mark.cluster
def test_broker_stopped_for_seconds_mid_stream_loses_nothing(
    driver_kind: str,
    own_node: RabbitCluster,
    name: str,
    make_driver: MakeDriver,
    report_figures: Callable[[str], None],
) -> None:
    [node] = own_node.nodes

    def restart_app() -> None:
        own_node.stop_app(node)
        try:
            time.sleep(3)
        finally:
            own_node.heal()

    result = stream_with_fault(driver_kind, node.url, name, make_driver, restart_app, total=2400)
    report_figures(result.line(f"{driver_kind}: stop_app 3 s / start_app"))
    assert result.refused == 0
    assert result.lost == 0
    assert result.accepted == result.published


def test_a_handler_that_finishes_after_its_channel_died_does_not_ack_on_the_new_one(
    broker_url: str,
    vhost: str,
    name: str,
    make_driver: MakeDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    in_handler = threading.Event()

    subscriber = make_driver()

    def slow_first_time(event: DomainEvent) -> object:
        calls.append(event.data["n"])
        if len(calls) == 1:
            in_handler.set()
            return subscriber.pause(2.0)
        return None

    subscriber.register(slow_first_time, name, [f"{name}.#"])
    publish_domain_event(f"{name}.x", {"n": "first"}, connection_settings=broker_url)
    publish_domain_event(f"{name}.x", {"n": "second"}, connection_settings=broker_url)

    def cut_while_handling() -> None:
        in_handler.wait(10)
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: cut mid-handler")

    cutter = threading.Thread(target=cut_while_handling)
    cutter.start()
    with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
        subscriber.run_until(lambda: calls.count("second") >= 1 and len(calls) >= 3, 20, 0.5)
    cutter.join()
    # The first event was redelivered and handled again; nothing was acked twice
    # or on the wrong channel (that would close the channel and reconnect again).
    assert calls.count("first") == 2
    assert calls.count("second") == 1
    assert queue_depth(broker_url, name) == 0
    reconnects = [
        r
        for r in caplog.records
        if "subscriber" in r.name and "lost" in r.getMessage() and "RabbitMQ" in r.getMessage()
    ]
    assert len(reconnects) == 1, [r.getMessage() for r in reconnects]


def _start_worker(
    kind: str, broker_url: str, name: str, seconds: float, journal: Path
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(SUBSCRIBER_PROCESS),
            kind,
            broker_url,
            name,
            str(seconds),
            str(journal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(journal, f"ready - {process.pid}", process=process)
    return process


def _wait_for(
    journal: Path, text: str, timeout: float = 30, process: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and text in journal.read_text():
            return
        if process is not None and process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the worker exited with {process.returncode}: {output}")
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
    driver_kind: str, broker_url: str, name: str, tmp_path: Path, delete_queue_afterwards: None
) -> None:
    journal = tmp_path / "journal"
    doomed = _start_worker(driver_kind, broker_url, name, 30, journal)
    event = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    _wait_for(journal, f"start {event.uuid_string} {doomed.pid}")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    successor = _start_worker(driver_kind, broker_url, name, 0, journal)
    try:
        _wait_for(journal, f"done {event.uuid_string} {successor.pid}")
    finally:
        successor.send_signal(signal.SIGTERM)
        successor.wait(30)
    assert successor.returncode == 0
    assert queue_depth(broker_url, name) == 0


def test_sigterm_during_a_slow_handler_finishes_it_acks_once_and_exits_0(
    driver_kind: str,
    broker_url: str,
    name: str,
    tmp_path: Path,
    delete_queue_afterwards: None,
    report_figures: Callable[[str], None],
) -> None:
    journal = tmp_path / "journal"
    worker = _start_worker(driver_kind, broker_url, name, 2.0, journal)
    first = publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
    second = publish_domain_event(f"{name}.x", {"n": 2}, connection_settings=broker_url)
    _wait_for(journal, f"start {first.uuid_string}")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    lines = journal.read_text().splitlines()
    assert sum(line.startswith(f"done {first.uuid_string}") for line in lines) == 1
    assert not any(second.uuid_string in line for line in lines), "took a new event after SIGTERM"
    assert f"stopped - {worker.pid}" in lines
    # The finished event was acked; the one never started waits for the next worker.
    assert queue_depth(broker_url, name) == 1
    report_figures(
        f"{driver_kind}: SIGTERM during a 2 s handler: finished=1 acked=1 requeued=1 "
        f"exit={worker.returncode} in {time.monotonic() - signalled:.2f}s"
    )


def test_a_second_sigterm_stops_at_once_and_the_event_is_redelivered(
    driver_kind: str, broker_url: str, name: str, tmp_path: Path, delete_queue_afterwards: None
) -> None:
    journal = tmp_path / "journal"
    worker = _start_worker(driver_kind, broker_url, name, 30, journal)
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
    driver_kind: str,
    vhost: str,
    name: str,
    proxy: TcpProxy,
    make_driver: MakeDriver,
    make_publishing: MakePublishing,
) -> None:
    received: list[int] = []
    subscriber = make_driver()
    subscriber.register(lambda e: received.append(e.data["n"]), name, [f"{name}.#"])
    publisher = make_publishing(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}", publish_timeout=2.0
    )
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
    assert "Raise publish_timeout" in str(raised.value)
    assert ":guest@" not in str(raised.value)

    # Back up: the publisher recovers by itself.
    proxy.start()
    # The next reconnect attempt may be a full backoff (up to 3 s) away.
    publisher.set_publish_timeout(10.0)
    publisher.publish_event(DomainEvent(f"{name}.x", {"n": 4}))
    publisher.close()
    subscriber.run_until(lambda: 4 in received, settle=0.3)
    assert sorted(received) == [1, 2, 4]


def test_consuming_keeps_its_deadline_across_reconnects(
    vhost: str, name: str, proxy: TcpProxy, make_driver: MakeDriver
) -> None:
    subscriber = make_driver(f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}")
    subscriber.register(print, name, [f"{name}.#"])
    proxy.stop()
    threading.Timer(1.0, proxy.start).start()
    took = subscriber.run_for(3.0)
    assert 2.9 < took < 5


@pytest.mark.disrupts_broker
def test_a_broker_blocking_publishers_gives_a_clear_error_and_publishing_resumes(
    name: str, make_publishing: MakePublishing
) -> None:
    watermark = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    publisher = make_publishing(publish_timeout=2.0)
    publisher.publish_event(DomainEvent(f"{name}.before"))
    rabbitmqctl("set_vm_memory_high_watermark", "0.000001")  # a memory alarm, now
    try:
        time.sleep(1.0)
        started = time.monotonic()
        # pika is told that publishers are blocked; aio-pika keeps it to itself, and
        # its error names the alarm as the cause to check.
        with pytest.raises(PublishError, match=r"memory or disk alarm"):
            publisher.publish_event(DomainEvent(f"{name}.during"))
        assert time.monotonic() - started < 4
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", watermark)
    started = time.monotonic()
    publisher.publish_event(DomainEvent(f"{name}.after"))
    assert time.monotonic() - started < 5
