"""The relay as operators run it: ``domain-events-relay --health-port --metrics-port``, a real
process on PostgreSQL and the real broker; and the outbox gauges read from a store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from domain_event_broker import prometheus
from domain_event_broker.sqlalchemy import add_event, outbox_table
from domain_event_broker.sqlalchemy.outbox import SQLAlchemyOutboxStore
from domain_event_broker.sqlalchemy.tables import utc_now
from support import delete_queues, free_port, http_get, queue_depth, wait_for

RELAY_COMMAND = str(Path(sys.executable).parent / "domain-events-relay")


def health(port: int) -> dict[str, Any]:
    status, body = http_get(port, "/healthz")
    assert status in (200, 503), body
    return dict(json.loads(body))


def gauge(port: int, name: str) -> float | None:
    _status, body = http_get(port, "/metrics")
    for line in body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def write(engine: Engine, routing_key: str, count: int) -> None:
    with Session(engine) as session, session.begin():
        for n in range(count):
            add_event(session, routing_key, {"n": n})


def test_relay_process_serves_its_health_and_outbox_metrics(
    pg_engine: Engine, postgres_url: str, broker_url: str, name: str
) -> None:
    import pika

    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    health_port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            RELAY_COMMAND,
            "--database-url",
            postgres_url,
            "--url",
            broker_url,
            "--poll-interval",
            "0.2",
            "--health-port",
            str(health_port),
            "--metrics-port",
            str(metrics_port),
            "--stuck-after",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # One process: no multi-process directory (even an empty value switches it on).
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    try:
        wait_for(lambda: http_get(health_port, "/readyz")[0] == 200, what="ready")
        report = health(health_port)
        assert report["connected"] is True and report["consuming"] is True
        assert report["last_handled_at"] is None  # nothing relayed yet: reported, not judged
        assert gauge(metrics_port, "domain_event_outbox_pending") == 0

        write(pg_engine, f"{name}.placed", 3)
        wait_for(lambda: queue_depth(broker_url, name) == 3, what="3 events relayed")
        wait_for(lambda: health(health_port)["last_handled_at"] is not None, what="batch time")
        assert abs(health(health_port)["last_handled_at"] - time.time()) < 30
        published = f'domain_events_published_total{{routing_key="{name}.placed"}} 3.0'
        assert published in http_get(metrics_port, "/metrics")[1]
        # The gauges are read at most every 5 s: wait for a fresh read.
        wait_for(lambda: gauge(metrics_port, "domain_event_outbox_pending") == 0, what="gauge")

        # A batch that cannot finish (the table is locked) is stuck: liveness fails,
        # and the backlog shows on /metrics meanwhile.
        with pg_engine.connect() as locker:
            locker.execute(text("LOCK TABLE domain_event_outbox IN ACCESS EXCLUSIVE MODE"))
            wait_for(lambda: http_get(health_port, "/livez")[0] == 503, what="stuck")
            stuck = health(health_port)["stuck"]
            assert [work["what"] for work in stuck] == ["outbox relay"]
            assert http_get(health_port, "/readyz")[0] == 503
            locker.rollback()
        wait_for(lambda: http_get(health_port, "/livez")[0] == 200, what="live again")
        wait_for(lambda: http_get(health_port, "/readyz")[0] == 200, what="ready again")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        delete_queues(broker_url, name)
    assert process.returncode == 0, err.decode()
    assert "relayed 3 events" in out.decode()


def test_outbox_gauges_count_pending_rows_and_the_oldest_ones_age(pg_engine: Engine) -> None:
    registry = CollectorRegistry()
    store = SQLAlchemyOutboxStore(pg_engine)
    prometheus.watch_outbox_store(store, registry=registry, min_interval=0)

    def value(metric: str) -> float | None:
        return registry.get_sample_value(metric)

    assert value("domain_event_outbox_pending") == 0
    assert value("domain_event_outbox_oldest_pending_seconds") == 0
    write(pg_engine, "shop.order.placed", 4)
    with pg_engine.begin() as connection:
        ids = [row.id for row in connection.execute(outbox_table.select().order_by("id"))]
        connection.execute(
            update(outbox_table)
            .where(outbox_table.c.id == ids[0])
            .values(created_at=utc_now() - timedelta(minutes=10))
        )
        connection.execute(  # sent: not pending
            update(outbox_table).where(outbox_table.c.id == ids[1]).values(sent_at=utc_now())
        )
        connection.execute(  # parked: not pending either (the status command shows it)
            update(outbox_table).where(outbox_table.c.id == ids[2]).values(parked_at=utc_now())
        )
    assert value("domain_event_outbox_pending") == 2
    age = value("domain_event_outbox_oldest_pending_seconds")
    assert age is not None and 600 <= age < 660
    with pg_engine.begin() as connection:
        connection.execute(update(outbox_table).values(sent_at=utc_now()))
    assert value("domain_event_outbox_pending") == 0
    assert value("domain_event_outbox_oldest_pending_seconds") == 0


@pytest.mark.parametrize("option", ["--metrics-port", "--health-port"])
def test_a_port_in_use_is_a_clear_error(postgres_url: str, broker_url: str, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [RELAY_COMMAND, "--database-url", postgres_url, "--url", broker_url, option, str(port)],
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert b"cannot serve the health probe or metrics" in result.stderr
