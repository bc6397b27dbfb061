"""Ordered handling across processes: work spreads, and partitions move when a process dies.

Four subscriber processes of one ordered subscriber; 100 objects x 30 events
published from 3 threads; a process doing work is SIGKILLed a third of the way
in. Every event ends handled (or dead-lettered), and per object no event is ever
handled before every earlier one was (a redelivered event may be handled again).
With failures: a Retry on every 7th event and a dead letter on every 20th, and
the SIGKILL (or SIGTERM: a graceful hand-over) comes while retries are held in
the process stopped.

The SIGTERM case is a rolling restart on quorum partitions: a new process starts as
the stopped one leaves, while events still come, so the others hand partitions
over to it in the middle of the traffic (a ``basic.cancel`` there would break the
order on quorum queues).

The spread is measured as an operator sees it, on the management API (which
consumer of each partition is the single active one, and whose connection it
is): within 30 s of the start each of the K processes is active on ⌊P/K⌋ to ⌈P/K⌉
partitions; after the kill, the dead one's partitions are active elsewhere within
10 s, and the spread holds again (K - 1 processes) within 30 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from domain_event_broker import DomainEvent, Publisher
from support import get_all, management, wait_for

OBJECTS = 100
EVENTS = 30
PARTITIONS = 8
PROCESSES = 4
#: How far the management API's figures may lag behind (its default statistics interval).
STATISTICS_LAG = 5
SCRIPT = Path(__file__).with_name("ordered_process.py")


def start(
    driver: str, url: str, name: str, failures: bool, journal: Path, queue_type: str = "classic"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            driver,
            url,
            name,
            str(PARTITIONS),
            "0.002",
            "yes" if failures else "no",
            str(journal),
            queue_type,
        ],
    )


def read(journal: Path) -> list[tuple[int, str, int]]:
    """(pid, object, n) of each handled line, in the order they were written."""
    lines = journal.read_text().splitlines() if journal.exists() else []
    return [
        (int(pid), obj, int(n))
        for pid, what, *rest in (line.split() for line in lines)
        if what == "handled"
        for obj, n, _retries, _at in [rest]
    ]


def publish_from_threads(url: str, pause: float = 0.0) -> None:
    """Each of 3 threads publishes the events of its third of the objects, in order
    (``pause``: seconds between two rounds of one event per object)."""

    def publish(thread: int) -> None:
        publisher = Publisher(url)
        try:
            for n in range(EVENTS):
                time.sleep(pause)
                for o in range(thread, OBJECTS, 3):
                    publisher.publish_event(DomainEvent("order.changed", {"n": n}, f"order-{o}"))
        finally:
            publisher.disconnect()

    threads = [threading.Thread(target=publish, args=(thread,)) for thread in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def handled_at(journal: Path) -> list[tuple[int, str, float]]:
    """(pid, object, time.time()) of each handled line."""
    lines = journal.read_text().splitlines()
    return [
        (int(pid), rest[0], float(rest[3]))
        for pid, what, *rest in (line.split() for line in lines)
        if what == "handled"
    ]


def moved_after(journal: Path, victim: int, stopped_at: float) -> float | None:
    """Seconds from ``stopped_at`` until another process first handled an event of an
    object the victim had handled (whose partition was the victim's); None: no such
    event came after the stop."""
    entries = handled_at(journal)
    victims = {obj for pid, obj, at in entries if pid == victim and at <= stopped_at}
    later = [at for pid, obj, at in entries if pid != victim and obj in victims and at > stopped_at]
    return min(later) - stopped_at if later else None


def active_partitions(vhost: str, name: str) -> dict[int, int | None]:
    """The pid of the process whose consumer is active on each partition (None: none)."""
    pids = {}
    for connection in management(vhost, "vhosts/{vhost}/connections"):
        client_name = (connection.get("client_properties") or {}).get("connection_name", "")
        if "pid=" in client_name:
            pids[connection["name"]] = int(client_name.rsplit("pid=", 1)[1])
    active: dict[int, int | None] = {}
    for index in range(PARTITIONS):
        try:
            queue = management(vhost, f"queues/{{vhost}}/{name}-p{index:03d}")
        except urllib.error.HTTPError as error:  # not declared yet
            if error.code != 404:
                raise
            queue = {}
        active[index] = next(
            (
                pids.get((consumer.get("channel_details") or {}).get("connection_name", ""))
                for consumer in queue.get("consumer_details") or []
                if consumer.get("activity_status") == "single_active"
            ),
            None,
        )
    return active


def spread_over(alive: set[int], vhost: str, name: str) -> bool:
    """Whether each process of ``alive`` is active on its fair share, and no other one is."""
    active = active_partitions(vhost, name)
    if set(active.values()) != alive:
        return False
    low, high = PARTITIONS // len(alive), -(-PARTITIONS // len(alive))
    return all(low <= list(active.values()).count(pid) <= high for pid in alive)


def check_order(handled: list[tuple[int, str, int]], expected: dict[str, list[int]]) -> None:
    by_object: dict[str, list[int]] = defaultdict(list)
    for _, obj, n in handled:
        by_object[obj].append(n)
    for obj, numbers in expected.items():
        seen: list[int] = []
        for n in by_object[obj]:
            earlier = [m for m in numbers if m < n]
            missing = [m for m in earlier if m not in seen]
            assert not missing, f"{obj}: event {n} handled before {missing} ({by_object[obj]})"
            seen.append(n)
        assert sorted(set(seen)) == numbers, f"{obj}: not every event handled"


@pytest.mark.parametrize(
    ("failures", "stop"),
    [(False, signal.SIGKILL), (True, signal.SIGKILL), (True, signal.SIGTERM)],
    ids=[
        "plain-sigkill",
        "retries-and-dead-letters-sigkill",
        "retries-and-dead-letters-rolling-restart-quorum",
    ],
)
def test_each_object_in_order_across_processes_with_one_stopped(
    driver_kind: str,
    broker_url: str,
    vhost: str,
    name: str,
    tmp_path: Path,
    failures: bool,
    stop: signal.Signals,
) -> None:
    journal = tmp_path / "journal"
    rolling = stop == signal.SIGTERM
    queue_type = "quorum" if rolling else "classic"
    started_at = time.monotonic()
    processes = [
        start(driver_kind, broker_url, name, failures, journal, queue_type)
        for _ in range(PROCESSES)
    ]
    try:
        pids = {process.pid for process in processes}
        wait_for(lambda: spread_over(pids, vhost, name), 30, "the partitions spread")
        spread_after = time.monotonic() - started_at
        # A rolling restart: events keep coming for ~10 s, so that the new process's
        # partitions are handed over to it under traffic.
        pause = 0.3 if rolling else 0.0
        publisher = threading.Thread(target=publish_from_threads, args=(broker_url, pause))
        publisher.start()
        total = OBJECTS * EVENTS
        wait_for(lambda: len(read(journal)) >= total // 3, 60, "a third handled")
        # The process doing the work now (a retry of its own may be held in it).
        busiest = Counter(pid for pid, _, _ in read(journal)[-50:]).most_common(1)[0][0]
        victim = next(process for process in processes if process.pid == busiest)
        victim.send_signal(stop)  # SIGTERM: a graceful hand-over of its partitions
        killed_at, killed_at_wall = time.monotonic(), time.time()
        survivors = pids - {busiest}
        if rolling:
            replacement = start(driver_kind, broker_url, name, failures, journal, queue_type)
            processes.append(replacement)
            survivors.add(replacement.pid)

        def taken_over() -> bool:
            return set(active_partitions(vhost, name).values()) <= survivors

        # The management API's figures lag (its statistics interval, 5 s by default).
        wait_for(taken_over, 10 + STATISTICS_LAG, "the stopped process's partitions elsewhere")
        took_over = time.monotonic() - killed_at
        wait_for(lambda: spread_over(survivors, vhost, name), 30, "the spread over the others")
        spread_again = time.monotonic() - killed_at
        publisher.join(120)
        dead = {n for n in range(EVENTS) if failures and n % 20 == 19}
        expected = {
            f"order-{o}": [n for n in range(EVENTS) if n not in dead] for o in range(OBJECTS)
        }
        wanted = sum(len(numbers) for numbers in expected.values())
        wait_for(lambda: len({(o, n) for _, o, n in read(journal)}) >= wanted, 120, "all handled")
        handled = read(journal)
        check_order(handled, expected)
        moved = moved_after(journal, busiest, killed_at_wall)  # by the handlers' clocks
        assert moved is None or moved < 10, f"its partitions moved after {moved:.1f} s"
        assert len({pid for pid, _, _ in handled}) >= 2
        if rolling:
            assert replacement.pid in {pid for pid, _, _ in handled}
            assert victim.wait(30) == 0  # it stopped gracefully
        if failures:
            dead_letters = get_all(broker_url, f"{name}-dl")
            assert len(dead_letters) == OBJECTS * len(dead)
        print(
            f"\n[{driver_kind}] spread over {PROCESSES} processes {spread_after:.1f} s after "
            f"the start; partitions moved within {took_over:.1f} s of {stop.name} (management "
            f"API), first events of its objects elsewhere after {moved or 0:.1f} s; spread "
            f"again after {spread_again:.1f} s; {len(handled) - wanted} events handled again; "
            f"all handled {time.monotonic() - killed_at:.1f} s after the {stop.name}"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
