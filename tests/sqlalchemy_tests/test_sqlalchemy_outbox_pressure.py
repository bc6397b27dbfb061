"""The SQLAlchemy relay under broker pressure: an oversized row, a host clock that is off."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from domain_event_broker.sqlalchemy import add_event, outbox_table, relay_events
from outbox_support import arrivals, lowered_max_message_size, watched_queues

DOMAIN_EVENTS = str(Path(sys.executable).parent / "domain-events")


@pytest.fixture
def watched(broker_url: str, name: str) -> Iterator[str]:
    """A queue that sees every event ``<name>.#``, and one that refuses ``<name>.refused.#``."""
    with watched_queues(broker_url, name) as watched:
        yield watched


def row_of(engine: Engine, uuid_string: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(outbox_table).where(outbox_table.c.uuid_string == uuid_string)
        ).one()


@pytest.mark.disrupts_broker
def test_an_oversized_row_is_parked_at_once_and_the_ten_behind_it_go_out(
    pg_engine: Engine, broker_url: str, watched: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "domain_event_broker")
    with lowered_max_message_size(broker_url) as limit:
        with Session(pg_engine) as session, session.begin():
            big = add_event(session, f"{watched}.big", {"blob": "x" * (limit + 1024 * 1024)})
            small = [add_event(session, f"{watched}.small", {"n": n}) for n in range(10)]
        started = time.monotonic()
        # The relay's own limit is left at its default (128 MiB): the broker refuses it.
        stats = relay_events(pg_engine, broker_url, once=True)
        took = time.monotonic() - started
    assert took < 10
    assert (stats.relayed, stats.parked) == (10, 1)
    got = [body["uuid_string"] for body in arrivals(broker_url, watched)]
    assert got == [event.uuid_string for event in small], "each small one once, in order"
    parked = row_of(pg_engine, big.uuid_string)
    size = len(big.to_json().encode("utf-8"))
    reason = f"max_message_size: the event is {size} bytes, the limit {limit}"
    assert (parked.sent_at, parked.attempts, parked.last_error) == (None, 1, reason)
    assert parked.parked_at is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(big.uuid_string in line and reason in line for line in errors), errors
    assert not any("Is RabbitMQ running" in r.getMessage() for r in caplog.records)

    database_url = pg_engine.url.render_as_string(hide_password=False)
    status = subprocess.run(
        [DOMAIN_EVENTS, "outbox", "--database-url", database_url, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "parked: 1" in status.stdout
    assert big.uuid_string in status.stdout and reason in status.stdout


def test_next_attempts_are_timed_by_the_databases_clock_not_the_relay_hosts(
    pg_engine: Engine, broker_url: str, watched: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This relay's host clock runs an hour ahead of the database's.
    def an_hour_ahead() -> datetime:
        return datetime.now(timezone.utc) + timedelta(hours=1)

    monkeypatch.setattr("domain_event_broker.sqlalchemy.outbox.utc_now", an_hour_ahead)
    monkeypatch.setattr("domain_event_broker.sqlalchemy.tables.utc_now", an_hour_ahead)
    with Session(pg_engine) as session, session.begin():
        refused = add_event(session, f"{watched}.refused.x", {"n": 1})
    options: dict[str, Any] = {"once": True, "retry_delay": 60.0, "max_retry_delay": 60.0}
    assert relay_events(pg_engine, broker_url, **options).refused == 1
    with pg_engine.connect() as connection:
        database_now = connection.execute(select(func.now())).scalar_one()
    due = row_of(pg_engine, refused.uuid_string).next_attempt_at
    assert timedelta(seconds=55) < due - database_now <= timedelta(seconds=60)
    # Not tried again before its time, however far ahead this host's clock is.
    assert relay_events(pg_engine, broker_url, **options).refused == 0
    assert row_of(pg_engine, refused.uuid_string).attempts == 1
    assert len(arrivals(broker_url, watched)) == 1, "the one refused attempt's copy"
