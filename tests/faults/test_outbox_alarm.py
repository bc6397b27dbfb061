"""The outbox relay through a memory alarm: it waits, its memory stays flat, no row twice.

A throw-away single RabbitMQ node of its own (AMQP on 127.0.0.1:5694, Erlang
distribution on 25694; see ``rabbit_cluster.py``) is put under a memory alarm
for ``DEB_TEST_ALARM_SECONDS`` (60 s unless set) while a relay process publishes
200 rows of 50 KB from a PostgreSQL outbox. Before the relay waited through an
alarm, it timed out after 10 s, counted an outage and sent the whole batch again
after each backoff: each copy waited in its process's memory, and after the
alarm the broker stored every row about as often as it had been tried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pytest
from rabbit_cluster import RabbitCluster, throwaway_node
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain_event_broker import DomainEvent, Publisher
from domain_event_broker.errors import ConfirmTimeout
from domain_event_broker.messages import OutgoingMessage
from domain_event_broker.sqlalchemy import SQLAlchemyOutboxStore, add_event
from support import delete_queues, get_all

pytestmark = pytest.mark.cluster

ROWS = 200
ROW_BYTES = 50 * 1024
ALARM_SECONDS = float(os.environ.get("DEB_TEST_ALARM_SECONDS", "60"))
#: What the relay's process may grow by while it waits out the alarm.
MAX_GROWTH = 40 * 1024 * 1024

#: The relay as a process of its own, stopped by SIGTERM (as ``domain-events-relay``).
RELAY = """
import logging, sys
from domain_event_broker.outbox import OutboxRelay, stop_on_signals
from domain_event_broker.sqlalchemy import SQLAlchemyOutboxStore

logging.basicConfig(level=logging.INFO)
relay = OutboxRelay(SQLAlchemyOutboxStore(sys.argv[1]), sys.argv[2], poll_interval=0.2)
stop_on_signals(relay)
with relay:
    relay.run()
"""


@pytest.fixture(scope="module")
def alarm_node() -> Iterator[RabbitCluster]:
    with throwaway_node("debalarm", amqp_port=5694) as node:
        yield node


def rss_of(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_a_relay_waits_out_a_memory_alarm_without_growing_or_sending_a_row_twice(
    alarm_node: RabbitCluster, outbox_database: Engine, report_figures: Callable[[str], None]
) -> None:
    [node] = alarm_node.nodes
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "domain-events", routing_key=f"{queue}.#")
    store = SQLAlchemyOutboxStore(outbox_database)
    database_url = outbox_database.url.render_as_string(hide_password=False)
    watermark = alarm_node.ctl(
        node, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    ).strip()
    relay = subprocess.Popen(
        [sys.executable, "-c", RELAY, database_url, node.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    alarm_on = False
    try:
        alarm_node.ctl(node, "set_vm_memory_high_watermark", "0.0001")
        alarm_on = True
        time.sleep(3.0)  # the relay started and polls its empty outbox
        baseline = peak = rss_of(relay.pid)
        with Session(outbox_database) as session, session.begin():
            ids = [
                add_event(session, f"{queue}.row", {"n": n, "pad": "x" * ROW_BYTES}).uuid_string
                for n in range(ROWS)
            ]
        held_until = time.monotonic() + ALARM_SECONDS
        while time.monotonic() < held_until:
            assert relay.poll() is None, "the relay died during the alarm"
            peak = max(peak, rss_of(relay.pid))
            time.sleep(0.5)
        assert store.count_pending() == ROWS, "nothing is marked sent while the broker holds it"
        alarm_node.ctl(node, "set_vm_memory_high_watermark", watermark)
        alarm_on = False
        wait_for(lambda: store.count_pending() == 0, 60, "rows not sent after the alarm")
        peak = max(peak, rss_of(relay.pid))
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(30) == 0
    finally:
        if alarm_on:
            alarm_node.ctl(node, "set_vm_memory_high_watermark", watermark)
        if relay.poll() is None:
            relay.kill()
            relay.wait()
    arrived = [body for _m, _p, body in get_all(node.url, queue)]
    delete_queues(node.url, queue)
    uuids = [json.loads(body)["uuid_string"] for body in arrived]
    copies = len(uuids) / ROWS
    growth = peak - baseline
    report_figures(
        f"outbox relay through a {ALARM_SECONDS:.0f} s memory alarm, {ROWS} rows of "
        f"{ROW_BYTES // 1024} KB: RSS +{growth / 2**20:.1f} MB, {copies:.2f} copies per row"
    )
    assert set(uuids) == set(ids), "every row delivered"
    assert copies <= 1.1
    assert growth < MAX_GROWTH, f"the relay grew by {growth / 2**20:.1f} MB"


@pytest.mark.timeout(120)
def test_publish_batch_waits_through_an_alarm_only_while_asked_to(
    alarm_node: RabbitCluster,
) -> None:
    [node] = alarm_node.nodes
    queue = f"alarm-batch-{uuid.uuid4().hex[:8]}"
    with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "domain-events", routing_key=f"{queue}.#")
    watermark = alarm_node.ctl(
        node, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    ).strip()
    waited = [DomainEvent(f"{queue}.waited", {"n": n}) for n in range(20)]
    with Publisher(node.url, publish_timeout=2.0, nack_grace=0.0) as publisher:
        publisher.publish_event(DomainEvent(f"{queue}.before"))  # connected before the alarm
        alarm_node.ctl(node, "set_vm_memory_high_watermark", "0.0001")
        clear = threading.Timer(
            6.0, alarm_node.ctl, args=(node, "set_vm_memory_high_watermark", watermark)
        )
        clear.start()
        try:
            timed_out = publisher.publish_batch(
                [OutgoingMessage.of_event(DomainEvent(f"{queue}.late", {"n": n})) for n in range(5)]
            )
            started = time.monotonic()
            outcomes = publisher.publish_batch(
                [OutgoingMessage.of_event(event) for event in waited], while_blocked=lambda: True
            )
            took = time.monotonic() - started
        finally:
            clear.join()
    # Not asked to wait: the time-out, naming the alarm.
    assert all(isinstance(outcome.error, ConfirmTimeout) for outcome in timed_out)
    assert "blocking publishers" in str(timed_out[0].error)
    assert [outcome.error for outcome in outcomes] == [None] * len(waited)
    assert took > 2.5, "it waited for the alarm to clear, past its 2 s time-out"
    bodies = [json.loads(body) for _m, _p, body in get_all(node.url, queue)]
    delete_queues(node.url, queue)
    arrived = [body["uuid_string"] for body in bodies if body["routing_key"].endswith(".waited")]
    assert arrived == [event.uuid_string for event in waited], "each once, in order"
