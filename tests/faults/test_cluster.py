"""Fault injection on a 3-node RabbitMQ cluster: losing a node loses no event.

The test starts its own cluster on loopback (see ``rabbit_cluster.py``; about
20 s and 0.5 GB) and never touches the main node on 5672. Each case prints one
line: published / accepted / refused / handled / duplicates / lost, and how long
handling and publishing paused (the recovery time).

Deselect with ``pytest -m "not cluster"``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pika
import pytest
from rabbit_cluster import Node, RabbitCluster, find_sbin, running_cluster
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain_event_broker import DomainEvent, Publisher, Retry, Subscriber
from domain_event_broker.errors import DomainEventBrokerError
from domain_event_broker.outbox import OutboxRelay
from domain_event_broker.sqlalchemy import SQLAlchemyOutboxStore, add_event
from support import delete_queues, get_all

pytestmark = pytest.mark.cluster

PUBLISHER_THREADS = 4
#: Milliseconds a quorum queue's at-least-once dead-letter worker waits for the
#: confirm of a dead letter before sending it again (RabbitMQ's default: 180 s).
#: After a failover the worker may wait that long before it moves copies out of a
#: wait queue again; the suite lowers it to stay fast (see docs/retries.md), but keeps
#: it above the lease of 3.x wait queues for Retry(0.5) (10.5 s after their last
#: declare), so that this case catches a wait queue deleted with copies inside.
DEAD_LETTER_CONFIRM_TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def cluster() -> Iterator[RabbitCluster]:
    sbin = find_sbin()
    if sbin is None:
        pytest.skip("RabbitMQ's server scripts (rabbitmq_server-*/sbin) are not installed")
    settings = {"dead_letter_worker_publisher_confirm_timeout": DEAD_LETTER_CONFIRM_TIMEOUT_MS}
    with running_cluster(sbin, rabbit_settings=settings) as started:
        yield started


@pytest.fixture
def whole_cluster(cluster: RabbitCluster) -> RabbitCluster:
    """The cluster with every node running (an earlier case may have stopped one)."""
    cluster.heal()
    return cluster


@dataclass
class StreamReport:
    published: int
    accepted: int
    refused: int
    handled: int
    duplicates: int
    lost: int
    dead_lettered: int
    retried: int
    handling_pause: float
    publishing_pause: float
    refusals: list[str]
    queues: str = ""  # the subscriber's queues at the end, shown when events are missing

    def line(self, case: str) -> str:
        return (
            f"{case}: published={self.published} accepted={self.accepted} "
            f"refused={self.refused} handled={self.handled} duplicates={self.duplicates} "
            f"lost={self.lost} retried={self.retried} dead-lettered={self.dead_lettered} "
            f"recovery={self.handling_pause:.2f}s (publishing paused "
            f"{self.publishing_pause:.2f}s)" + (f"\n  queues: {self.queues}" if self.lost else "")
        )


def longest_pause(since: float, moments: list[float]) -> float:
    """The longest stretch without an event, from ``since`` (the fault) on."""
    later = sorted(moment for moment in moments if moment >= since)
    gaps = [b - a for a, b in zip([since, *later], later, strict=False)]
    return max(gaps, default=0.0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


def client_nodes(cluster: RabbitCluster) -> dict[str, set[str]]:
    """Which nodes our publisher and subscriber are connected to (by connection name)."""
    found: dict[str, set[str]] = {"publisher": set(), "subscriber": set()}
    for row in cluster.connections():
        properties = str(row["client_properties"])
        for role, nodes in found.items():
            if f"domain-event-broker {role}" in properties:
                nodes.add(cluster.node_on_port(int(row["port"])).name)
    return found


MAX_RETRIES = 3


def fate(number: int, retries: int) -> str:
    """What the handler does with event ``number`` on delivery ``retries``, when
    the stream has failures: most are handled at once; every tenth is retried
    twice (0.5 s) first; some fail at once and some retry until ``MAX_RETRIES``
    is exceeded (both dead-lettered)."""
    if number % 50 == 7:
        return "fail"
    if number % 100 == 30:
        return "retry" if retries < MAX_RETRIES else "fail"  # dead-lettered by max_retries
    if number % 10 == 0 and retries < 2:
        return "retry"
    return "handle"


def stream_through_node_loss(
    cluster: RabbitCluster,
    fault: Callable[[Node], None],
    total: int = 3000,
    rate: float = 300.0,
    failures: bool = False,
) -> StreamReport:
    """Publish ``total`` events at ``rate``/s to a quorum-queue subscriber, both on
    all three node URLs; a third of the way in, hit the queue leader's node with
    ``fault``. Wait until every accepted event was handled or failed (or 120 s)
    and report. ``failures``: the handler retries and fails some (see ``fate``)."""
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    all_urls = ",".join(node.url for node in cluster.nodes)
    lock = threading.Lock()
    handled: Counter[int] = Counter()
    handled_at: list[float] = []
    failed: set[int] = set()
    retried: set[int] = set()

    def handle(event: DomainEvent) -> None:
        number = event.data["n"]
        what = fate(number, event.retries) if failures else "handle"
        with lock:
            handled_at.append(time.monotonic())
            if what == "handle":
                handled[number] += 1
            elif what == "retry":
                retried.add(number)
            else:
                failed.add(number)
        if what == "retry":
            raise Retry(0.5)
        if what == "fail":
            raise ValueError(f"event {number} cannot be handled")

    subscriber = Subscriber(all_urls, handle_signals=False)
    subscriber.register(
        handle,
        name,
        [f"{name}.#"],
        dead_letter=True,
        queue_type="quorum",
        max_retries=MAX_RETRIES,
    )
    leader = cluster.quorum_leader(name)
    # The publisher tries the URLs in order (the subscriber from a random one, and the
    # leader is where its queue was declared): leader first, so the fault hits both.
    publisher_urls = ",".join(
        node.url for node in sorted(cluster.nodes, key=lambda node: node is not leader)
    )
    consumer_errors: list[BaseException] = []

    def consume() -> None:
        try:
            subscriber.start_consuming(timeout=300)
        except BaseException as error:
            consumer_errors.append(error)

    consumer = threading.Thread(target=consume, name="cluster-subscriber", daemon=True)
    consumer.start()

    accepted: list[int] = []
    accepted_at: list[float] = []
    refusals: list[str] = []
    started = time.monotonic()

    def publish(publisher: Publisher, first: int) -> None:
        for number in range(first, total, PUBLISHER_THREADS):
            pause = started + number / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # a steady pace, not a flood
            try:
                publisher.publish_event(DomainEvent(f"{name}.happened", {"n": number}))
            except DomainEventBrokerError as error:
                with lock:
                    refusals.append(f"{type(error).__name__}: {error}")
            else:
                with lock:
                    accepted.append(number)
                    accepted_at.append(time.monotonic())

    def all_handled() -> bool:
        with lock:
            return set(accepted) <= handled.keys() | failed

    def moved_off_leader() -> bool:
        now_on = client_nodes(cluster)
        return all(nodes and leader.name not in nodes for nodes in now_on.values())

    try:
        with Publisher(publisher_urls) as publisher:
            publishers = [
                threading.Thread(
                    target=publish, args=(publisher, first), name=f"cluster-pub-{first}"
                )
                for first in range(PUBLISHER_THREADS)
            ]
            for thread in publishers:
                thread.start()
            try:
                wait_for(lambda: len(handled) >= total // 3, 60, "a third of the events handled")
                hit = client_nodes(cluster)
                assert hit == {"publisher": {leader.name}, "subscriber": {leader.name}}, (
                    f"both clients should be on the leader {leader.name} before the fault: {hit}"
                )
                fault_at = time.monotonic()
                fault(leader)
            finally:
                for thread in publishers:
                    thread.join(timeout=total / rate + 120)
            with contextlib.suppress(AssertionError):  # what is missing is reported as lost
                wait_for(all_handled, 120, "every accepted event handled")
            # Still connected: both clients now live on a surviving node.
            wait_for(moved_off_leader, 30, f"publisher and subscriber off {leader.name}")
    finally:
        subscriber.stop_consuming()
        consumer.join(60)
    assert not consumer.is_alive(), "the subscriber did not stop"
    assert not consumer_errors, f"the subscriber failed: {consumer_errors[0]!r}"

    survivor = next(node for node in cluster.running_nodes() if node is not leader)
    queues = [
        row
        for row in cluster.ctl_json(
            survivor,
            *("list_queues", "name", "messages", "messages_ready", "leader", "members"),
            settle=60.0,
        )
        if row["name"].startswith(name)
    ]
    dead_lettered = read_dead_letters(survivor, f"{name}-dl")
    return StreamReport(
        published=total,
        accepted=len(accepted),
        refused=len(refusals),
        handled=len(handled),
        duplicates=sum(handled.values()) - len(handled),
        lost=len(set(accepted) - set(handled) - dead_lettered),
        dead_lettered=len(dead_lettered),
        retried=len(retried),
        handling_pause=longest_pause(fault_at, handled_at),
        publishing_pause=longest_pause(fault_at, accepted_at),
        refusals=refusals[:3],
        queues=str(queues),
    )


def read_dead_letters(node: Node, queue: str) -> set[int]:
    """The numbers of the events in the dead-letter queue (taken out of it)."""
    numbers: set[int] = set()
    with pika.BlockingConnection(pika.URLParameters(node.url)) as connection:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return numbers
            numbers.add(DomainEvent.from_json(body).data["n"])


FAULTS: dict[str, Callable[[RabbitCluster, Node], None]] = {
    # A crash or power loss: sockets reset, no goodbye.
    "killed": RabbitCluster.kill,
    # An orderly shutdown (maintenance, rolling upgrade): clients are told to go.
    "stopped": RabbitCluster.stop_app,
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", FAULTS)
def test_losing_the_quorum_leader_node_loses_no_event(
    whole_cluster: RabbitCluster, fault: str, report_figures: Callable[[str], None]
) -> None:
    report = stream_through_node_loss(
        whole_cluster, lambda leader: FAULTS[fault](whole_cluster, leader)
    )
    case = f"cluster, queue leader's node {fault}"
    report_figures(report.line(case))
    assert report.refused == 0, f"publishes failed during the failover: {report.refusals}"
    assert report.lost == 0
    assert report.dead_lettered == 0
    assert report.handled == report.accepted


@pytest.mark.timeout(300)
@pytest.mark.parametrize("run", [1, 2, 3])
def test_killing_the_leader_loses_no_retry_and_no_dead_letter(
    whole_cluster: RabbitCluster, run: int, report_figures: Callable[[str], None]
) -> None:
    # Three runs in a row: the loss this guards against came in 5 of 7 runs.
    restarts: list[threading.Timer] = []

    def kill_then_restart(leader: Node) -> None:
        # A crash, and the node is back 3 s later (as a supervisor would restart it).
        whole_cluster.kill(leader)
        restart = threading.Timer(3.0, whole_cluster.start_node, args=(leader,))
        restarts.append(restart)
        restart.start()

    try:
        report = stream_through_node_loss(
            whole_cluster, kill_then_restart, total=1500, failures=True
        )
    finally:
        # The next case heals the cluster: a restart still pending would start the node
        # a second time beside the one healing started.
        for restart in restarts:
            restart.join()
    report_figures(report.line(f"cluster, leader killed with retries waiting, run {run}"))
    expected_failures = {n for n in range(1500) if fate(n, MAX_RETRIES) == "fail"}
    assert report.refused == 0, f"publishes failed during the failover: {report.refusals}"
    assert report.retried > 0
    # Every event handled or dead-lettered (duplicates allowed), none lost.
    assert report.lost == 0
    assert report.handled + report.dead_lettered == report.accepted
    assert report.dead_lettered == len(expected_failures)


@pytest.mark.timeout(600)
def test_killing_the_quorum_leader_under_the_outbox_relay_parks_no_healthy_row(
    whole_cluster: RabbitCluster, outbox_database: Engine, report_figures: Callable[[str], None]
) -> None:
    # While a quorum queue elects a new leader the broker refuses events (basic.nack), and
    # RabbitMQ 3.10 goes on refusing on a channel that published meanwhile: a relay that
    # kept that channel collected refusals for healthy rows until it parked them.
    total, rate = 600, 60.0
    name = f"relay-{uuid.uuid4().hex[:8]}"
    first = whole_cluster.nodes[0]
    with pika.BlockingConnection(pika.URLParameters(first.url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    leader = whole_cluster.quorum_leader(name)
    urls = ",".join(node.url for node in sorted(whole_cluster.nodes, key=lambda n: n is not leader))
    store = SQLAlchemyOutboxStore(outbox_database)
    relay = OutboxRelay(
        store, urls, poll_interval=0.05, max_attempts=10, retry_delay=1.0, max_retry_delay=2.0
    )
    relaying = threading.Thread(target=relay.run, kwargs={"timeout": 300}, daemon=True)
    relaying.start()
    written: list[str] = []
    try:
        started = time.monotonic()
        for number in range(total):
            pause = started + number / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with Session(outbox_database) as session, session.begin():
                written.append(add_event(session, f"{name}.row", {"n": number}).uuid_string)
            if number == total // 3:
                whole_cluster.kill(leader)
        wait_for(lambda: store.status().pending == 0, 120, "every row sent or parked")
    finally:
        relay.stop()
        relaying.join(60)
        relay.close()
    status = store.status()
    survivor = next(node for node in whole_cluster.running_nodes() if node is not leader)
    delivered = Counter(
        DomainEvent.from_json(body).uuid_string for _m, _p, body in get_all(survivor.url, name)
    )
    delete_queues(survivor.url, name)
    report_figures(
        f"cluster, quorum leader killed under the outbox relay: rows={total} "
        f"delivered={len(delivered)} duplicates={sum(delivered.values()) - len(delivered)} "
        f"refusals={relay.stats.refused} parked={status.parked}"
    )
    assert not relaying.is_alive(), "the relay did not stop"
    assert status.parked == 0, f"{status.parked} healthy rows parked"
    assert set(delivered) == set(written), f"{total - len(delivered)} rows not delivered"
