"""The Django outbox: rows written in the transaction, relayed in order, once, through outages."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone
from testproject.shop.models import Order

from django_tests.conftest import ALIASES, bodies
from django_tests.project import manage
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent
from domain_event_broker.django.outbox import DjangoOutboxStore, relay_outbox
from domain_event_broker.outbox import OutboxRelay
from support import queue_depth, rabbitmqctl, wait_for


def pending(alias: str = "default") -> int:
    return OutboxEvent.objects.using(alias).filter(sent_at__isnull=True).count()


def place_orders(prefix: str, count: int, per_transaction: int = 1, alias: str = "default") -> None:
    """Commit ``count`` orders, each with its event written to the outbox."""
    for start in range(0, count, per_transaction):
        with transaction.atomic(using=alias):
            for n in range(start, min(count, start + per_transaction)):
                Order.objects.using(alias).create(reference=f"{prefix}-{n}")
                publish_on_commit(f"{prefix}.order.placed", {"n": n}, outbox=True, using=alias)


@pytest.mark.parametrize("alias", ALIASES)
def test_row_is_written_in_the_transaction_and_relayed_exactly_once(
    alias: str, broker_url: str, event_queue: str
) -> None:
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(reference="B-1")
        event = publish_on_commit(f"{event_queue}.order.placed", {"n": 1}, outbox=True, using=alias)
    assert bodies(broker_url, event_queue) == [], "sent directly, not through the outbox"
    assert pending(alias) == 1

    assert relay_outbox(using=alias, once=True).relayed == 1
    assert bodies(broker_url, event_queue) == [event.event_data]
    row = OutboxEvent.objects.using(alias).get()
    assert row.sent_at is not None and row.uuid_string == event.uuid_string

    assert relay_outbox(using=alias, once=True).relayed == 0
    assert bodies(broker_url, event_queue) == []


@pytest.mark.parametrize("alias", ALIASES)
def test_rollback_leaves_no_row(alias: str) -> None:
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        Order.objects.using(alias).create(reference="B-2")
        publish_on_commit("shop.order.placed", {"n": 2}, outbox=True, using=alias)
        raise RuntimeError("payment declined")
    assert not OutboxEvent.objects.using(alias).exists()


@pytest.mark.parametrize("alias", ALIASES)
def test_relay_sends_rows_in_the_order_they_were_written(
    alias: str, broker_url: str, event_queue: str
) -> None:
    place_orders(event_queue, 60, per_transaction=10, alias=alias)
    stats = relay_outbox(using=alias, once=True, batch_size=7)
    assert (stats.relayed, stats.batches) == (60, 9)
    assert [body["data"]["n"] for body in bodies(broker_url, event_queue)] == list(range(60))


@pytest.mark.parametrize("alias", ALIASES)
def test_sent_rows_are_deleted_after_the_retention_period(alias: str, event_queue: str) -> None:
    place_orders(event_queue, 4, alias=alias)
    relay_outbox(using=alias, once=True, retention=None)
    old, recent, *_ = OutboxEvent.objects.using(alias).order_by("id")
    OutboxEvent.objects.using(alias).filter(id=old.id).update(
        sent_at=timezone.now() - timedelta(days=8)
    )
    place_orders(event_queue, 1, alias=alias)  # pending: never deleted, however old
    OutboxEvent.objects.using(alias).filter(sent_at__isnull=True).update(
        created_at=timezone.now() - timedelta(days=30)
    )
    stats = relay_outbox(using=alias, once=True, retention=timedelta(days=7))
    assert (stats.relayed, stats.deleted) == (1, 1)
    remaining = set(OutboxEvent.objects.using(alias).values_list("id", flat=True))
    assert old.id not in remaining and recent.id in remaining and len(remaining) == 4


@pytest.fixture
def locked_rows() -> Iterator[Callable[[int], list[int]]]:
    """Lock the ``n`` oldest pending rows from another connection, as a relay mid-batch does."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    def lock(n: int) -> list[int]:
        locked: list[int] = []
        ready = threading.Event()

        def hold() -> None:
            try:
                with transaction.atomic():
                    rows = OutboxEvent.objects.filter(sent_at__isnull=True).order_by("id")
                    locked.extend(rows.select_for_update().values_list("id", flat=True)[:n])
                    ready.set()
                    release.wait(30)
            finally:
                connections.close_all()

        thread = threading.Thread(target=hold, daemon=True)
        thread.start()
        threads.append(thread)
        assert ready.wait(10)
        return locked

    yield lock
    release.set()
    for thread in threads:
        thread.join(10)


def test_relay_skips_rows_another_relay_holds(
    broker_url: str, event_queue: str, locked_rows: Callable[[int], list[int]]
) -> None:
    place_orders(event_queue, 20, per_transaction=20)
    held = locked_rows(5)
    assert relay_outbox(once=True, batch_size=3).relayed == 15
    pending_ids = set(OutboxEvent.objects.filter(sent_at__isnull=True).values_list("id", flat=True))
    assert pending_ids == set(held)
    assert sorted(body["data"]["n"] for body in bodies(broker_url, event_queue)) == list(
        range(5, 20)
    )


@pytest.mark.disrupts_broker
def test_events_committed_while_the_broker_is_down_are_delivered_when_it_is_back(
    broker_url: str, event_queue: str
) -> None:
    relay = OutboxRelay(
        DjangoOutboxStore(), broker_url, poll_interval=0.1, max_backoff=1.0, publish_timeout=3.0
    )

    def run() -> None:
        try:
            relay.run(timeout=90)
        finally:
            relay.close()

    thread = threading.Thread(target=run, daemon=True)
    place_orders(f"{event_queue}.before", 1)
    thread.start()
    wait_for(lambda: pending() == 0, 10, "the first event relayed")
    try:
        rabbitmqctl("stop_app")
        place_orders(event_queue, 100, per_transaction=1)
        time.sleep(2)  # the relay tries, fails and backs off meanwhile
        assert pending() == 100, "rows marked sent while the broker was down"
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    wait_for(lambda: pending() == 0, 60, "every row relayed after the outage")
    relay.stop()
    thread.join(30)
    assert relay.stats.failed_attempts >= 1, "the relay never noticed the outage"
    arrived = bodies(broker_url, event_queue)
    assert len(arrived) == 101
    assert sorted(b["data"]["n"] for b in arrived[1:]) == list(range(100))
    assert len({b["uuid_string"] for b in arrived}) == 101


def test_two_relay_processes_at_once_deliver_every_event_once(
    broker_url: str, event_queue: str, manage_env: dict[str, str]
) -> None:
    command = manage("relay_domain_events", "--poll-interval", "0.05", "--batch-size", "50")
    relays = [
        subprocess.Popen(command, env=manage_env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for relay in relays:
            assert relay.stdout is not None
            assert relay.stdout.readline().startswith("relaying the outbox")
        started = time.monotonic()
        place_orders(event_queue, 1000, per_transaction=100)
        wait_for(lambda: queue_depth(broker_url, event_queue) >= 1000, 60, "1000 events")
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        for relay in relays:
            relay.terminate()
        outputs = [relay.communicate(timeout=30)[0] for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0]
    arrived = bodies(broker_url, event_queue)
    uuids = {body["uuid_string"] for body in arrived}
    assert pending() == 0
    assert len(arrived) == 1000, f"{len(arrived) - len(uuids)} duplicates"
    assert sorted(body["data"]["n"] for body in arrived) == list(range(1000))
    counts = [int(output.split("relayed ")[1].split()[0]) for output in outputs]
    assert sum(counts) == 1000
    print(f"two relays: {counts} rows in {elapsed:.2f} s ({1000 / elapsed:.0f} events/s)")
