"""Fault injection for the asyncio publisher and subscriber: nothing accepted is lost.

Each stream case prints one line (see the summary at the end of the run):
published / accepted / refused / handled / duplicates / lost / longest pause.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from domain_event_broker import DomainEvent, publish_domain_event
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber
from faults.rabbit_cluster import find_sbin
from support import delete_queues, queue_depth, rabbitmqctl

from .helpers import delete_topology
from .single_node import SingleNode

SUBSCRIBER_PROCESS = Path(__file__).with_name("subscriber_process.py")
FIGURES: list[str] = []


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
            f"asyncio {case}: published={self.published} accepted={self.accepted} "
            f"refused={self.refused} handled={self.handled} duplicates={self.duplicates} "
            f"lost={self.lost} recovery={self.longest_pause:.2f}s"
        )


async def stream_with_fault(
    url: str, name: str, fault: Callable[[], None], total: int = 3000, rate: float = 600.0
) -> StreamReport:
    """Publish ``total`` events at ``rate``/s (each confirmed) while an AsyncSubscriber
    handles them; run ``fault`` in a thread a third of the way in. Wait until every
    accepted event was handled (or 90 s passed) and report."""
    handled: Counter[str] = Counter()
    handled_at: list[float] = []

    async def handle(event: DomainEvent) -> None:
        handled[event.uuid_string or ""] += 1
        handled_at.append(time.monotonic())

    subscriber = AsyncSubscriber(url, handle_signals=False, prefetch_count=100, concurrency=4)
    subscriber.register(handle, name, [f"{name}.#"])
    await subscriber.declare()
    consuming = asyncio.create_task(subscriber.run())
    accepted: list[str] = []
    refused = 0
    fault_done: asyncio.Future[None] | None = None
    started = time.monotonic()
    async with AsyncPublisher(url) as publisher:
        for number in range(total):
            if number == total // 3:
                fault_done = asyncio.ensure_future(asyncio.to_thread(fault))
            event = DomainEvent(f"{name}.happened", {"n": number})
            try:
                await publisher.publish_event(event)
                accepted.append(event.uuid_string or "")
            except Exception as error:  # a refused publish is what this test counts
                logging.getLogger(__name__).error("publish refused: %s", error)
                refused += 1
            pause = started + (number + 1) / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
    assert fault_done is not None
    await fault_done
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not set(accepted) <= set(handled):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # late duplicates, if any
    await subscriber.stop()
    await asyncio.wait_for(consuming, 30)
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
    broker_url: str, vhost: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    def close_twice() -> None:
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: first cut")
        time.sleep(1.0)
        rabbitmqctl("close_all_connections", "-p", vhost, "fault test: second cut")

    try:
        with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
            result = asyncio.run(stream_with_fault(broker_url, name, close_twice))
    finally:
        delete_topology(broker_url, name)
    FIGURES.append(result.line("close_all_connections x2"))
    assert result.refused == 0
    assert result.lost == 0
    assert result.accepted == result.published
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("domain_event_broker.aio")]
    assert any("subscriber lost RabbitMQ" in line for line in lines)
    assert any("subscriber reconnected" in line for line in lines)
    assert all("guest:guest" not in line for line in lines)


@pytest.fixture(scope="module")
def own_node() -> Iterator[SingleNode]:
    sbin = find_sbin()
    if sbin is None:
        pytest.skip("RabbitMQ's server scripts (rabbitmq_server-*/sbin) are not installed")
    node = SingleNode(sbin)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_broker_application_restarted_mid_stream_loses_nothing(
    own_node: SingleNode, name: str
) -> None:
    def restart() -> None:
        own_node.stop_application()
        time.sleep(3.0)
        own_node.start_application()

    result = asyncio.run(stream_with_fault(own_node.url, name, restart, total=2400))
    FIGURES.append(result.line("broker application restarted (3 s down)"))
    assert result.refused == 0
    assert result.lost == 0
    assert result.accepted == result.published


def _start_worker(
    broker_url: str, name: str, seconds: float, journal: Path
) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, str(SUBSCRIBER_PROCESS), broker_url, name, str(seconds), str(journal)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(journal, f"ready - {worker.pid}")
    return worker


def _wait_for(journal: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and text in journal.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(
        f"{text!r} not in the journal: {journal.read_text() if journal.exists() else ''}"
    )


def test_sigterm_during_a_slow_handler_finishes_it_acks_once_and_exits_0(
    broker_url: str, name: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    try:
        worker = _start_worker(broker_url, name, 2.0, journal)
        first = publish_domain_event(f"{name}.x", {"n": 1}, connection_settings=broker_url)
        second = publish_domain_event(f"{name}.x", {"n": 2}, connection_settings=broker_url)
        _wait_for(journal, f"start {first.uuid_string}")
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output
        lines = journal.read_text().splitlines()
        assert sum(line.startswith(f"done {first.uuid_string}") for line in lines) == 1
        assert not any(second.uuid_string in line for line in lines), "took an event after SIGTERM"
        assert f"stopped - {worker.pid}" in lines
        # The finished event was acked; the one never started waits for the next worker.
        assert queue_depth(broker_url, name) == 1
        FIGURES.append(
            f"asyncio SIGTERM during a 2 s handler: finished=1 acked=1 lost=0 refused=0 "
            f"requeued=1 exit={worker.returncode} in {time.monotonic() - signalled:.2f}s"
        )
    finally:
        delete_queues(broker_url, name)


def test_a_second_sigterm_stops_at_once_and_the_event_is_redelivered(
    broker_url: str, name: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    try:
        worker = _start_worker(broker_url, name, 30, journal)
        event = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
        _wait_for(journal, f"start {event.uuid_string}")
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=15)
        assert time.monotonic() - started < 5
        assert f"done {event.uuid_string}" not in journal.read_text()
        assert queue_depth(broker_url, name) == 1
    finally:
        delete_queues(broker_url, name)
