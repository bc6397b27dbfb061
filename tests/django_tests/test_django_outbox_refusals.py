"""The Django relay: no broker, refused events, parked rows, byte-for-byte payloads."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone

from django_tests.conftest import ALIASES
from django_tests.project import run_manage
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent
from domain_event_broker.django.outbox import relay_outbox
from domain_event_broker.observability import Metrics, add_listener
from outbox_support import arrivals, odd_payload, watched_queues
from support import broker_at, delete_queues, get_all


@pytest.fixture
def watched(broker_url: str, name: str) -> Iterator[str]:
    """A queue that sees every event ``<name>.#``, and one that refuses ``<name>.refused.#``."""
    with watched_queues(broker_url, name) as watched:
        yield watched


def write_events(keys: list[str], alias: str = "default") -> list[str]:
    with transaction.atomic(using=alias):
        return [
            publish_on_commit(key, {"n": n}, outbox=True, using=alias).uuid_string
            for n, key in enumerate(keys)
        ]


def row(uuid_string: str) -> OutboxEvent:
    return OutboxEvent.objects.get(uuid_string=uuid_string)


# No broker -------------------------------------------------------------------------
def test_relay_without_a_broker_refuses_to_run_and_leaves_every_row_pending(
    manage_env: dict[str, str],
) -> None:
    write_events(["shop.order.placed"] * 3)
    result = run_manage({**manage_env, "DEB_TEST_BROKER_URL": "none"}, "relay_domain_events")
    assert result.returncode != 0
    assert "no broker configured" in result.stderr
    assert "DOMAIN_EVENT_BROKER is None" in result.stderr
    with override_settings(DOMAIN_EVENT_BROKER=None):
        with pytest.raises(CommandError, match="no broker configured"):
            call_command("relay_domain_events", "--once")
        with pytest.raises(ValueError, match="no broker configured"):
            relay_outbox(once=True)
    assert list(OutboxEvent.objects.values_list("sent_at", "attempts")) == [(None, 0)] * 3


# One refused event -----------------------------------------------------------------
def test_a_refused_event_is_retried_later_then_parked_and_holds_back_no_other_row(
    broker_url: str, watched: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"{watched}.refused.x" if n == 3 else f"{watched}.good.x" for n in range(10)]
    ids = write_events(keys)
    later = write_events([f"{watched}.good.later"] * 5)
    metrics = Metrics()
    remove = add_listener(metrics)
    options: dict[str, Any] = {
        "once": True,
        "batch_size": 10,
        "max_attempts": 3,
        "retry_delay": 1.0,
        "max_retry_delay": 1.0,
    }
    try:
        started = timezone.now()
        stats = relay_outbox(broker_url, **options)
        assert (stats.relayed, stats.refused, stats.parked) == (14, 1, 0)
        seen = arrivals(broker_url, watched)
        good = [body["uuid_string"] for body in seen if ".good." in body["routing_key"]]
        assert good == ids[:3] + ids[4:] + later, "each good event once, in row order"
        assert [b["uuid_string"] for b in seen if ".refused." in b["routing_key"]] == [ids[3]]
        refused = row(ids[3])
        assert (refused.sent_at, refused.parked_at, refused.attempts) == (None, None, 1)
        assert "refused" in refused.last_error and "nack" in refused.last_error
        assert refused.next_attempt_at > started
        assert OutboxEvent.objects.filter(sent_at__isnull=False).count() == 14

        stats = relay_outbox(broker_url, **options)
        assert (stats.relayed, stats.refused) == (0, 0), "tried again before its time"
        assert arrivals(broker_url, watched) == []

        for attempt in (2, 3):
            time.sleep(1.1)
            stats = relay_outbox(broker_url, **options)
            assert (stats.relayed, stats.refused) == (0, 1)
            assert row(ids[3]).attempts == attempt
        assert row(ids[3]).parked_at is not None and row(ids[3]).sent_at is None
        assert row(ids[3]).state == "parked"
        assert stats.parked == 1
        assert len(arrivals(broker_url, watched)) == 2

        time.sleep(1.1)
        assert relay_outbox(broker_url, **options).refused == 0, "parked: left alone"
        assert arrivals(broker_url, watched) == []
    finally:
        remove()
    assert metrics.count("outbox_refused") == 2
    assert metrics.count("outbox_parked", routing_key=keys[3]) == 1
    assert any(
        r.levelno == logging.ERROR and ids[3] in r.getMessage() and "parked" in r.getMessage()
        for r in caplog.records
    )


def test_parked_rows_show_in_the_admin_and_commands_retry_or_discard_them(
    broker_url: str, watched: str
) -> None:
    ids = write_events([f"{watched}.refused.a", f"{watched}.refused.b"])
    relay_outbox(broker_url, once=True, max_attempts=1)
    arrivals(broker_url, watched)  # the copies of the refused attempts
    [waiting] = write_events([f"{watched}.good.pending"])

    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "x"))
    try:
        listing = client.get("/admin/domain_event_broker_django/outboxevent/?state=parked")
        assert listing.status_code == 200
        assert b"2 outbox events" in listing.content
        assert ids[0].encode() in listing.content and waiting.encode() not in listing.content
        assert b"refused" in listing.content
    finally:
        User.objects.all().delete()

    def outbox(*args: str) -> str:
        out = StringIO()
        call_command("domain_events_outbox", *args, stdout=out)
        return out.getvalue()

    status = outbox("status").splitlines()
    assert status[:2] == ["pending: 1 (0 waiting to be tried again after a refusal)", "parked: 2"]
    assert status[2].startswith("oldest pending: ")
    assert any(ids[0] in line and "nack" in line for line in status)
    with pytest.raises(CommandError, match="--all"):
        outbox("retry")
    assert outbox("discard", str(row(ids[1]).id)) == "1 parked rows discarded\n"
    assert not OutboxEvent.objects.filter(uuid_string=ids[1]).exists()

    delete_queues(broker_url, f"{watched}-full")  # the broker takes the event again
    assert outbox("retry", "--all") == "1 parked rows are pending again\n"
    assert row(ids[0]).state == "pending"
    assert relay_outbox(broker_url, once=True).relayed == 2
    assert [b["uuid_string"] for b in arrivals(broker_url, watched)] == [ids[0], waiting]
    assert outbox("status").splitlines()[1] == "parked: 0"


# Byte for byte -------------------------------------------------------------------
@pytest.mark.parametrize("alias", ALIASES)
def test_the_stored_payload_is_published_byte_for_byte(
    alias: str, broker_url: str, watched: str
) -> None:
    stored = [odd_payload(f"{watched}.order.placed", n) for n in range(3)]
    for uuid_string, payload in stored:
        OutboxEvent.objects.using(alias).create(
            routing_key=f"{watched}.order.placed", uuid_string=uuid_string, payload=payload
        )
    assert relay_outbox(broker_url, using=alias, once=True).relayed == 3
    published = get_all(broker_url, watched)
    assert [body for _m, _p, body in published] == [p.encode("utf-8") for _u, p in stored]
    assert [properties.message_id for _m, properties, _b in published] == [u for u, _p in stored]


# Failures stay visible -------------------------------------------------------------
def test_an_outage_is_one_warning_then_one_info_on_recovery(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from domain_event_broker.django.outbox import DjangoOutboxStore
    from domain_event_broker.outbox import OutboxRelay
    from outbox_support import relay_through_a_late_broker

    write_events([f"{name}.order.placed"] * 3)
    late = broker_at(f"deb-late-{name}")
    relay = OutboxRelay(DjangoOutboxStore(), late, poll_interval=0.1, max_backoff=0.5)
    warnings, infos = relay_through_a_late_broker(relay, caplog, late, name, f"{name}.#")
    assert len(warnings) == 1, warnings
    assert "outbox relay" in warnings[0] and "failed" in warnings[0]
    assert "guest:guest" not in warnings[0]
    assert len(infos) == 1 and "working again after" in infos[0]


def test_admin_actions_retry_and_discard_parked_rows_only(broker_url: str, watched: str) -> None:
    ids = write_events([f"{watched}.refused.a", f"{watched}.refused.b"])
    relay_outbox(broker_url, once=True, max_attempts=1)
    [waiting] = write_events([f"{watched}.good.pending"])
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "x"))
    url = "/admin/domain_event_broker_django/outboxevent/"
    try:
        for action, uuid_string in (("retry_parked", ids[0]), ("discard_parked", ids[1])):
            response = client.post(
                url,
                {"action": action, "_selected_action": [row(uuid_string).id, row(waiting).id]},
            )
            assert response.status_code == 302
    finally:
        User.objects.all().delete()
    assert row(ids[0]).state == "pending" and row(ids[0]).attempts == 0
    assert not OutboxEvent.objects.filter(uuid_string=ids[1]).exists()
    assert row(waiting).state == "pending", "a pending row is not discarded"
