"""The SQLAlchemy outbox: add_event in the session's transaction, relay_events, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from domain_event_broker import EventNotSerializable, InvalidRoutingKey
from domain_event_broker.sqlalchemy import add_event, outbox_table, relay_events
from sqlalchemy_tests.conftest import orders
from support import delete_queues, get_all, queue_depth, wait_for

RELAY_COMMAND = str(Path(sys.executable).parent / "domain-events-relay")


@pytest.fixture
def event_queue(broker_url: str, name: str) -> Iterator[str]:
    """A durable queue bound with ``<name>.#``; deleted afterwards."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    yield name
    delete_queues(broker_url, name)


def bodies(broker_url: str, queue: str) -> list[dict[str, Any]]:
    return [json.loads(body) for _m, _p, body in get_all(broker_url, queue)]


def pending(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count())
                .select_from(outbox_table)
                .where(outbox_table.c.sent_at.is_(None))
            ).scalar_one()
        )


def place_orders(engine: Engine, prefix: str, count: int, per_transaction: int = 1) -> None:
    for start in range(0, count, per_transaction):
        with Session(engine) as session, session.begin():
            for n in range(start, min(count, start + per_transaction)):
                session.execute(orders.insert().values(reference=f"{prefix}-{n}"))
                add_event(session, f"{prefix}.order.placed", {"n": n})


def test_commit_writes_a_row_that_the_relay_publishes_exactly_once(
    engine: Engine, broker_url: str, event_queue: str
) -> None:
    with Session(engine) as session, session.begin():
        session.execute(orders.insert().values(reference="C-1"))
        event = add_event(session, f"{event_queue}.order.placed", {"n": 1}, "C-1")
    assert bodies(broker_url, event_queue) == []
    assert pending(engine) == 1

    assert relay_events(engine, broker_url, once=True).relayed == 1
    assert bodies(broker_url, event_queue) == [event.event_data]
    assert relay_events(engine, broker_url, once=True).relayed == 0
    assert bodies(broker_url, event_queue) == []
    assert pending(engine) == 0


def test_rollback_leaves_no_row(engine: Engine) -> None:
    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        add_event(session, "shop.order.placed", {"n": 1})
        raise RuntimeError("payment declined")
    assert pending(engine) == 0


def test_bad_event_raises_before_anything_is_written(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        with pytest.raises(EventNotSerializable, match=r"data\['at'\]"):
            add_event(session, "shop.order.placed", {"at": datetime.now()})
        with pytest.raises(InvalidRoutingKey):
            add_event(session, "shop.*", {})
    assert pending(engine) == 0


def test_relay_sends_rows_in_the_order_they_were_written(
    engine: Engine, broker_url: str, event_queue: str
) -> None:
    place_orders(engine, event_queue, 50, per_transaction=10)
    stats = relay_events(engine, broker_url, once=True, batch_size=7)
    assert (stats.relayed, stats.batches) == (50, 8)
    assert [body["data"]["n"] for body in bodies(broker_url, event_queue)] == list(range(50))


def test_sent_rows_are_deleted_after_the_retention_period(
    engine: Engine, broker_url: str, event_queue: str
) -> None:
    place_orders(engine, event_queue, 3)
    relay_events(engine, broker_url, once=True, retention=None)
    with engine.begin() as connection:
        connection.execute(
            update(outbox_table)
            .where(outbox_table.c.id == select(func.min(outbox_table.c.id)).scalar_subquery())
            .values(sent_at=datetime.now(timezone.utc) - timedelta(days=8))
        )
    stats = relay_events(engine, broker_url, once=True, retention=timedelta(days=7))
    assert stats.deleted == 1
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(outbox_table)).scalar() == 2


def test_cli_relays_pending_rows_and_exits_with_once(
    pg_engine: Engine, broker_url: str, event_queue: str
) -> None:
    place_orders(pg_engine, event_queue, 5)
    result = subprocess.run(
        [
            RELAY_COMMAND,
            "--database-url",
            pg_engine.url.render_as_string(hide_password=False),
            "--url",
            broker_url,
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("relaying the outbox of database postgresql")
    assert "amqp://guest:***@" in result.stdout and "guest:guest" not in result.stdout
    assert "relayed 5 events" in result.stdout
    assert [body["data"]["n"] for body in bodies(broker_url, event_queue)] == list(range(5))


def test_cli_without_a_database_url_says_what_to_give() -> None:
    result = subprocess.run(
        [RELAY_COMMAND], capture_output=True, text=True, timeout=30, check=False, env={}
    )
    assert result.returncode == 2
    assert "--database-url" in result.stderr


def test_two_relay_processes_at_once_deliver_every_event_once(
    pg_engine: Engine, broker_url: str, event_queue: str
) -> None:
    database_url = pg_engine.url.render_as_string(hide_password=False)
    command = [
        RELAY_COMMAND,
        "--database-url",
        database_url,
        "--url",
        broker_url,
        "--poll-interval",
        "0.05",
        "--batch-size",
        "50",
    ]
    relays = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]
    try:
        for relay in relays:
            assert relay.stdout is not None
            assert relay.stdout.readline().startswith("relaying the outbox")
        place_orders(pg_engine, event_queue, 1000, per_transaction=250)
        wait_for(lambda: queue_depth(broker_url, event_queue) >= 1000, 60, "1000 events")
        time.sleep(0.3)  # a duplicate would arrive now
    finally:
        for relay in relays:
            relay.terminate()
        outputs = [relay.communicate(timeout=30)[0] for relay in relays]
    assert [relay.returncode for relay in relays] == [0, 0]
    arrived = bodies(broker_url, event_queue)
    assert len(arrived) == 1000, f"{len(arrived) - len({b['uuid_string'] for b in arrived})} dups"
    assert sorted(body["data"]["n"] for body in arrived) == list(range(1000))
    assert pending(pg_engine) == 0
    counts = [int(output.split("relayed ")[1].split()[0]) for output in outputs]
    assert sum(counts) == 1000


def test_example_script_runs(broker_url: str, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "examples" / "sqlalchemy_outbox.py"
    env = {**os.environ, "DOMAIN_EVENT_BROKER": broker_url}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'example.sqlite3'}"
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "relay: relayed 3 events" in result.stdout
    assert result.stdout.count("mail sent for order-") == 3
    assert "3 mails for 3 orders" in result.stdout
