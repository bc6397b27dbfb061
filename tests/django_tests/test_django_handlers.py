"""Handlers declared in apps, consume_domain_events, the inbox, and a relay killed mid-batch."""

from __future__ import annotations

import io
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from testproject.shop.handlers import COUNTER, RECORDER
from testproject.shop.models import HandledEvent

from django_tests.conftest import bodies
from django_tests.project import manage, run_manage
from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from domain_event_broker.django import idempotent, process_once, publish_on_commit
from domain_event_broker.django.models import OutboxEvent, ProcessedEvent
from domain_event_broker.django.registry import autodiscover_handlers
from pg_database import PG_HOST, PG_PORT, PG_USER
from support import consume_until, queue_depth, wait_for

MakeSubscriber = Callable[..., Subscriber]


def handled(subscriber: str) -> list[str]:
    """uuid_strings of the events ``subscriber``'s handler ran for, one per run."""
    return list(
        HandledEvent.objects.filter(subscriber=subscriber).values_list("uuid_string", flat=True)
    )


def declare_shop_queues(make_subscriber: MakeSubscriber) -> Subscriber:
    """A subscriber for the project's handlers, as consume_domain_events registers them."""
    subscriber = make_subscriber()
    for registration in autodiscover_handlers().values():
        subscriber.register(
            registration.django_handler(),
            registration.name,
            registration.binding_keys,
            **registration.options,
        )
    return subscriber


# The inbox --------------------------------------------------------------------------
def test_idempotent_handler_handles_a_redelivered_event_once() -> None:
    runs: list[str] = []

    @idempotent("mailer")
    def send_mail(event: DomainEvent) -> str:
        HandledEvent.objects.create(
            subscriber="mailer", uuid_string=event.uuid_string, routing_key="x", data={}
        )
        runs.append(event.uuid_string)
        return "sent"

    event = DomainEvent("user.registered", {"user_id": 1})
    assert send_mail(event) == "sent"
    assert send_mail(DomainEvent.from_json(event.to_json())) is None
    assert runs == [event.uuid_string]
    assert handled("mailer") == [event.uuid_string]


def test_a_failed_handler_leaves_no_record_and_runs_again() -> None:
    attempts: list[int] = []

    @idempotent("flaky")
    def flaky(event: DomainEvent) -> None:
        HandledEvent.objects.create(
            subscriber="flaky", uuid_string=event.uuid_string, routing_key="x", data={}
        )
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("mail server down")

    event = DomainEvent("user.registered", {})
    with pytest.raises(ConnectionError):
        flaky(event)
    assert not ProcessedEvent.objects.exists() and handled("flaky") == []
    flaky(event)
    flaky(event)
    assert len(attempts) == 2 and handled("flaky") == [event.uuid_string]


def test_each_subscriber_has_its_own_record_of_an_event() -> None:
    event = DomainEvent("user.registered", {})
    with transaction.atomic():
        assert process_once("mailer", event)
        assert process_once("crm-sync", event)
        assert not process_once("mailer", event)
    assert ProcessedEvent.objects.count() == 2


def test_process_once_outside_a_transaction_is_refused() -> None:
    with pytest.raises(TransactionManagementError, match=r"inside transaction\.atomic"):
        process_once("mailer", DomainEvent("user.registered", {}))


# consume_domain_events --------------------------------------------------------------
def test_consume_command_runs_the_autodiscovered_handlers(
    make_subscriber: MakeSubscriber, shop_queues: tuple[str, ...]
) -> None:
    declare_shop_queues(make_subscriber).stop_consuming()
    sent = [publish_domain_event("shop.order.placed", {"n": n}) for n in range(3)]
    out = io.StringIO()
    call_command("consume_domain_events", "--timeout", "2", stdout=out)
    assert f"consuming for {COUNTER}, {RECORDER} on amqp://guest:***@" in out.getvalue()
    expected = sorted(event.uuid_string for event in sent)
    assert sorted(handled(RECORDER)) == expected
    assert sorted(handled(COUNTER)) == expected


def test_consume_command_lists_and_refuses_unknown_names() -> None:
    out = io.StringIO()
    call_command("consume_domain_events", "--list", stdout=out)
    assert out.getvalue().splitlines() == [f"{COUNTER}: shop.#", f"{RECORDER}: shop.#"]
    with pytest.raises(CommandError, match=f"no handler named nope; known: {COUNTER}, {RECORDER}"):
        call_command("consume_domain_events", "nope")


def test_consume_subprocess_handles_events_and_stops_on_sigterm(
    broker_url: str, manage_env: dict[str, str], shop_queues: tuple[str, ...]
) -> None:
    consumer = subprocess.Popen(
        manage("consume_domain_events", RECORDER),
        env=manage_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().startswith(f"consuming for {RECORDER}")
        event = publish_domain_event("shop.order.placed", {"n": 1})
        wait_for(lambda: handled(RECORDER) == [event.uuid_string], 15, "the event handled")
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, err
    assert out.strip() == "stopped"
    assert queue_depth(broker_url, RECORDER) == 0


def test_consumer_survives_database_connections_dropped_between_events(
    broker_url: str, shop_queues: tuple[str, ...]
) -> None:
    """A worker must not keep a connection that the database has closed meanwhile."""
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            call_command("consume_domain_events", RECORDER, "--timeout", "4", stdout=io.StringIO())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: _queue_exists(broker_url, RECORDER), 10, "the queue declared")
    first = publish_domain_event("shop.order.placed", {"n": 1})
    wait_for(lambda: handled(RECORDER) == [first.uuid_string], 10, "the first event handled")
    with connection.cursor() as cursor:  # as a database restart or an idle timeout would
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    second = publish_domain_event("shop.order.placed", {"n": 2})
    wait_for(lambda: len(handled(RECORDER)) == 2, 10, "the second event handled")
    thread.join(15)
    assert not errors
    assert sorted(handled(RECORDER)) == sorted([first.uuid_string, second.uuid_string])
    assert queue_depth(broker_url, f"{RECORDER}-dl") == 0


def _queue_exists(broker_url: str, queue: str) -> bool:
    try:
        queue_depth(broker_url, queue)
    except Exception:
        return False
    return True


# A relay killed between publishing and marking sent --------------------------------
def test_relay_killed_before_marking_sent_sends_again_and_idempotent_handler_runs_once(
    broker_url: str,
    manage_env: dict[str, str],
    make_subscriber: MakeSubscriber,
    shop_queues: tuple[str, ...],
) -> None:
    subscriber = declare_shop_queues(make_subscriber)
    with transaction.atomic():
        events = [publish_on_commit("shop.order.placed", {"n": n}, outbox=True) for n in range(3)]
    # Another session holds a SHARE lock on the outbox: the relay can lock rows
    # (SELECT ... FOR UPDATE) and publish them, but its UPDATE ... SET sent_at waits.
    blocker = psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=connection.settings_dict["NAME"]
    )
    relay = subprocess.Popen(
        manage("relay_domain_events"), env=manage_env, stdout=subprocess.DEVNULL
    )
    try:
        blocker.execute("LOCK TABLE domain_event_outbox IN SHARE MODE")
        wait_for(lambda: queue_depth(broker_url, RECORDER) == 3, 15, "the batch published")
        relay_pid = _backend_waiting_for_a_lock(blocker)
        relay.kill()  # SIGKILL: no clean-up of any kind
        relay.wait(10)
    finally:
        if relay.poll() is None:
            relay.kill()
        blocker.rollback()
    _wait_until_backend_gone(blocker, relay_pid)
    blocker.close()
    assert OutboxEvent.objects.filter(sent_at__isnull=True).count() == 3

    result = run_manage(manage_env, "relay_domain_events", "--once")
    assert result.returncode == 0, result.stderr
    assert "relayed 3 events" in result.stdout
    assert queue_depth(broker_url, RECORDER) == 6, "each event twice on the broker"

    consume_until(subscriber, lambda: len(handled(COUNTER)) == 6, settle=0.3)
    uuids = sorted(event.uuid_string for event in events)
    assert sorted(handled(RECORDER)) == uuids, "the idempotent handler ran more than once"
    assert sorted(handled(COUNTER)) == sorted(uuids * 2)
    assert bodies(broker_url, RECORDER) == []


def _backend_waiting_for_a_lock(blocker: psycopg.Connection[tuple[object, ...]]) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # The blocker's transaction would otherwise see one snapshot of the activity.
        blocker.execute("SELECT pg_stat_clear_snapshot()")
        row = blocker.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE%%domain_event_outbox%%'"
        ).fetchone()
        if row:
            return int(str(row[0]))
        time.sleep(0.05)
    raise AssertionError("the relay is not waiting to mark its batch sent")


def _wait_until_backend_gone(blocker: psycopg.Connection[tuple[object, ...]], pid: int) -> None:
    # The killed relay's backend notices its client is gone once the lock is
    # free, and rolls back; until then it holds the row locks.
    blocker.autocommit = True
    deadline = time.monotonic() + 10
    while blocker.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, "the killed relay's transaction is still open"
        time.sleep(0.05)
