"""The Django relay under broker pressure: an oversized row, a host clock that is off."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.utils import timezone as django_timezone

from django_tests.conftest import ALIASES
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent
from domain_event_broker.django.outbox import relay_outbox
from outbox_support import arrivals, lowered_max_message_size, watched_queues


@pytest.fixture
def watched(broker_url: str, name: str) -> Iterator[str]:
    """A queue that sees every event ``<name>.#``, and one that refuses ``<name>.refused.#``."""
    with watched_queues(broker_url, name) as watched:
        yield watched


@pytest.mark.disrupts_broker
def test_an_oversized_row_is_parked_at_once_and_the_ten_behind_it_go_out(
    broker_url: str, watched: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "domain_event_broker")
    with lowered_max_message_size(broker_url) as limit:
        with transaction.atomic():
            big = publish_on_commit(
                f"{watched}.big", {"blob": "x" * (limit + 1024 * 1024)}, outbox=True
            )
            small = [
                publish_on_commit(f"{watched}.small", {"n": n}, outbox=True) for n in range(10)
            ]
        started = time.monotonic()
        # The relay's own limit is left at its default (128 MiB): the broker refuses it.
        stats = relay_outbox(broker_url, once=True)
        took = time.monotonic() - started
    assert took < 10
    assert (stats.relayed, stats.parked) == (10, 1)
    got = [body["uuid_string"] for body in arrivals(broker_url, watched)]
    assert got == [event.uuid_string for event in small], "each small one once, in order"
    parked = OutboxEvent.objects.get(uuid_string=big.uuid_string)
    size = len(big.to_json().encode("utf-8"))
    reason = f"max_message_size: the event is {size} bytes, the limit {limit}"
    assert (parked.state, parked.attempts, parked.last_error) == ("parked", 1, reason)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(big.uuid_string in line and reason in line for line in errors), errors
    assert not any("Is RabbitMQ running" in r.getMessage() for r in caplog.records)

    out = StringIO()
    call_command("domain_events_outbox", "status", stdout=out)
    assert "parked: 1" in out.getvalue()
    assert any(big.uuid_string in line and reason in line for line in out.getvalue().splitlines())
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "x"))
    try:
        listing = client.get("/admin/domain_event_broker_django/outboxevent/?state=parked")
        assert listing.status_code == 200
        assert big.uuid_string.encode() in listing.content
        assert reason.encode() in listing.content
    finally:
        User.objects.all().delete()


@pytest.mark.parametrize("alias", ALIASES)
def test_next_attempts_are_timed_by_the_databases_clock_not_the_relay_hosts(
    alias: str, broker_url: str, watched: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This relay's host clock runs an hour ahead of the database's (here the same machine's).
    def an_hour_ahead() -> datetime:
        return datetime.now(timezone.utc) + timedelta(hours=1)

    monkeypatch.setattr(django_timezone, "now", an_hour_ahead)
    with transaction.atomic(using=alias):
        refused = publish_on_commit(f"{watched}.refused.x", {"n": 1}, outbox=True, using=alias)
    options: dict[str, Any] = {"once": True, "retry_delay": 60.0, "max_retry_delay": 60.0}
    before = datetime.now(timezone.utc)
    assert relay_outbox(broker_url, using=alias, **options).refused == 1
    after = datetime.now(timezone.utc)
    due = OutboxEvent.objects.using(alias).get(uuid_string=refused.uuid_string).next_attempt_at
    assert before + timedelta(seconds=59) <= due <= after + timedelta(seconds=61)
    # Not tried again before its time, however far ahead this host's clock is.
    assert relay_outbox(broker_url, using=alias, **options).refused == 0
    assert OutboxEvent.objects.using(alias).get(uuid_string=refused.uuid_string).attempts == 1
    assert len(arrivals(broker_url, watched)) == 1, "the one refused attempt's copy"
