"""The SQLAlchemy relay: no broker, refused events, parked rows, byte-for-byte payloads."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from domain_event_broker.observability import Metrics, add_listener
from domain_event_broker.outbox.relay import NoBroker
from domain_event_broker.sqlalchemy import add_event, outbox_table, relay_events
from outbox_support import arrivals, odd_payload, watched_queues
from support import broker_at, delete_queues, get_all

BIN = Path(sys.executable).parent
RELAY_COMMAND = str(BIN / "domain-events-relay")
DOMAIN_EVENTS = str(BIN / "domain-events")


@pytest.fixture
def watched(broker_url: str, name: str) -> Iterator[str]:
    """A queue that sees every event ``<name>.#``, and one that refuses ``<name>.refused.#``."""
    with watched_queues(broker_url, name) as watched:
        yield watched


def write_events(engine: Engine, keys: list[str]) -> list[str]:
    with Session(engine) as session, session.begin():
        return [add_event(session, key, {"n": n}).uuid_string for n, key in enumerate(keys)]


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        found = connection.execute(select(outbox_table).order_by(outbox_table.c.id)).all()
    return {row.uuid_string: row for row in found}


def database_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# No broker -------------------------------------------------------------------------
def test_relay_without_a_broker_refuses_to_run_and_leaves_every_row_pending(
    pg_engine: Engine,
) -> None:
    write_events(pg_engine, ["shop.order.placed"] * 3)
    with pytest.raises(NoBroker, match="no broker configured"):
        relay_events(pg_engine, None, once=True)
    env = {**os.environ, "DOMAIN_EVENT_BROKER": ""}
    result = subprocess.run(
        [RELAY_COMMAND, "--database-url", database_url(pg_engine), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout
    assert "no broker configured" in result.stderr
    assert all(row.sent_at is None and row.attempts == 0 for row in rows(pg_engine).values())
    assert len(rows(pg_engine)) == 3


# One refused event -----------------------------------------------------------------
def test_a_refused_event_is_retried_later_then_parked_and_holds_back_no_other_row(
    pg_engine: Engine, broker_url: str, watched: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"{watched}.refused.x" if n == 3 else f"{watched}.good.x" for n in range(10)]
    ids = write_events(pg_engine, keys)
    later = write_events(pg_engine, [f"{watched}.good.later"] * 5)
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
        started = datetime.now(timezone.utc)
        stats = relay_events(pg_engine, broker_url, **options)
        assert (stats.relayed, stats.refused, stats.parked) == (14, 1, 0)
        seen = arrivals(broker_url, watched)
        good = [body["uuid_string"] for body in seen if ".good." in body["routing_key"]]
        assert good == ids[:3] + ids[4:] + later, "each good event once, in row order"
        assert [body["uuid_string"] for body in seen if ".refused." in body["routing_key"]] == [
            ids[3]
        ]
        refused = rows(pg_engine)[ids[3]]
        assert refused.sent_at is None and refused.parked_at is None
        assert refused.attempts == 1
        assert "refused" in refused.last_error and "nack" in refused.last_error
        assert refused.next_attempt_at > started
        assert all(rows(pg_engine)[uuid].sent_at is not None for uuid in good)

        # Not before its time.
        stats = relay_events(pg_engine, broker_url, **options)
        assert (stats.relayed, stats.refused) == (0, 0)
        assert arrivals(broker_url, watched) == []
        assert rows(pg_engine)[ids[3]].attempts == 1

        # Second and third attempts; parked after the third.
        for attempt in (2, 3):
            time.sleep(1.1)
            stats = relay_events(pg_engine, broker_url, **options)
            assert (stats.relayed, stats.refused) == (0, 1)
            assert rows(pg_engine)[ids[3]].attempts == attempt
        parked = rows(pg_engine)[ids[3]]
        assert parked.parked_at is not None and parked.sent_at is None
        assert stats.parked == 1
        assert len(arrivals(broker_url, watched)) == 2  # one copy per attempt, no more

        time.sleep(1.1)
        assert relay_events(pg_engine, broker_url, **options).refused == 0, "parked: left alone"
        assert arrivals(broker_url, watched) == []
    finally:
        remove()
    assert metrics.count("outbox_refused") == 2
    assert metrics.count("outbox_parked", routing_key=keys[3]) == 1
    parked_logs = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any(ids[3] in r.getMessage() and "parked" in r.getMessage() for r in parked_logs)


def test_cli_shows_parked_rows_and_retries_or_discards_them(
    pg_engine: Engine, broker_url: str, watched: str
) -> None:
    ids = write_events(pg_engine, [f"{watched}.refused.a", f"{watched}.refused.b"])
    relay_events(pg_engine, broker_url, once=True, max_attempts=1)
    assert len(arrivals(broker_url, watched)) == 2  # the copies of the refused attempts
    [waiting] = write_events(pg_engine, [f"{watched}.good.pending"])

    def domain_events(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOMAIN_EVENTS, "outbox", "--database-url", database_url(pg_engine), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    status = domain_events("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("pending: 1 ")
    assert lines[1] == "parked: 2"
    assert lines[2].startswith("oldest pending: ") and lines[2].endswith(" s")
    assert ids[0] in status.stdout and ids[1] in status.stdout
    assert "refused" in status.stdout

    assert domain_events("retry").returncode == 2, "neither ids nor --all"
    row_ids = {uuid: row.id for uuid, row in rows(pg_engine).items()}
    discarded = domain_events("discard", str(row_ids[ids[1]]))
    assert discarded.stdout.strip() == "1 parked rows discarded"
    assert ids[1] not in rows(pg_engine)

    delete_queues(broker_url, f"{watched}-full")  # the broker takes the event again
    retried = domain_events("retry", "--all")
    assert retried.stdout.strip() == "1 parked rows are pending again"
    row = rows(pg_engine)[ids[0]]
    assert (row.attempts, row.parked_at, row.next_attempt_at) == (0, None, None)
    assert relay_events(pg_engine, broker_url, once=True).relayed == 2
    assert [body["uuid_string"] for body in arrivals(broker_url, watched)] == [ids[0], waiting]
    assert domain_events("status").stdout.splitlines()[:2] == [
        "pending: 0 (0 waiting to be tried again after a refusal)",
        "parked: 0",
    ]


# Byte for byte -------------------------------------------------------------------
def test_the_stored_payload_is_published_byte_for_byte(
    engine: Engine, broker_url: str, watched: str
) -> None:
    stored = [odd_payload(f"{watched}.order.placed", n) for n in range(3)]
    with engine.begin() as connection:
        connection.execute(
            outbox_table.insert(),
            [
                {"routing_key": f"{watched}.order.placed", "uuid_string": u, "payload": p}
                for u, p in stored
            ],
        )
    assert relay_events(engine, broker_url, once=True).relayed == 3
    published = get_all(broker_url, watched)
    assert [body for _m, _p, body in published] == [p.encode("utf-8") for _u, p in stored]
    assert [properties.message_id for _m, properties, _b in published] == [u for u, _p in stored]


# Failures stay visible -------------------------------------------------------------
def test_an_outage_is_one_warning_then_one_info_on_recovery(
    pg_engine: Engine, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from domain_event_broker.outbox import OutboxRelay
    from domain_event_broker.sqlalchemy import SQLAlchemyOutboxStore
    from outbox_support import relay_through_a_late_broker

    write_events(pg_engine, [f"{name}.order.placed"] * 3)
    late = broker_at(f"deb-late-{name}")
    relay = OutboxRelay(SQLAlchemyOutboxStore(pg_engine), late, poll_interval=0.1, max_backoff=0.5)
    warnings, infos = relay_through_a_late_broker(relay, caplog, late, name, f"{name}.#")
    assert len(warnings) == 1, warnings
    assert "outbox relay" in warnings[0] and "failed" in warnings[0]
    assert "guest:guest" not in warnings[0]
    assert len(infos) == 1 and "working again after" in infos[0]


def test_a_payload_over_the_size_limit_is_refused_alone(
    pg_engine: Engine, broker_url: str, watched: str
) -> None:
    with Session(pg_engine) as session, session.begin():
        ids = [
            add_event(
                session, f"{watched}.good.x", {"pad": "x" * (5000 if n == 1 else 10)}
            ).uuid_string
            for n in range(4)
        ]
    stats = relay_events(pg_engine, broker_url, once=True, max_message_size=2000)
    assert (stats.relayed, stats.refused) == (3, 1)
    assert [b["uuid_string"] for b in arrivals(broker_url, watched)] == [ids[0], *ids[2:]]
    big = rows(pg_engine)[ids[1]]
    assert big.attempts == 1 and big.parked_at is not None, "parked at once"
    # The event's size varies by a byte or two with its timestamp's digits: the reason names it.
    reason = re.fullmatch(
        r"max_message_size: the event is (\d+) bytes, the limit 2000", big.last_error or ""
    )
    assert reason is not None, big.last_error
    assert 5000 < int(reason.group(1)) < 5400, "the padded event's own size"
