"""Idempotent handlers with SQLAlchemy, and a relay killed between publishing and marking sent."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from domain_event_broker import DomainEvent, Subscriber
from domain_event_broker.sqlalchemy import add_event, idempotent, outbox_table, process_once
from pg_database import PG_HOST, PG_PORT, PG_USER
from sqlalchemy_tests.conftest import handled_events
from sqlalchemy_tests.test_sqlalchemy_outbox import RELAY_COMMAND, pending, wait_for
from support import consume_until, delete_queues, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def handled(engine: Engine, subscriber: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(handled_events.c.uuid_string).where(
                    handled_events.c.subscriber == subscriber
                )
            ).scalars()
        )


def recorder(name: str) -> Callable[[DomainEvent, Session], None]:
    def record(event: DomainEvent, session: Session) -> None:
        session.execute(
            handled_events.insert().values(subscriber=name, uuid_string=event.uuid_string)
        )

    return record


def test_idempotent_handler_handles_a_redelivered_event_once(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    handle = idempotent(session_factory, "mailer")(recorder("mailer"))
    event = DomainEvent("user.registered", {"user_id": 1})
    handle(event)
    handle(DomainEvent.from_json(event.to_json()))
    assert handled(engine, "mailer") == [event.uuid_string]


def test_a_failed_handler_leaves_no_record_and_runs_again(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    attempts: list[int] = []

    @idempotent(session_factory, "flaky")
    def flaky(event: DomainEvent, session: Session) -> None:
        recorder("flaky")(event, session)
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("mail server down")

    event = DomainEvent("user.registered", {})
    with pytest.raises(ConnectionError):
        flaky(event)
    assert handled(engine, "flaky") == []
    flaky(event)
    flaky(event)
    assert len(attempts) == 2 and handled(engine, "flaky") == [event.uuid_string]


def test_each_subscriber_has_its_own_record(engine: Engine) -> None:
    event = DomainEvent("user.registered", {})
    with Session(engine) as session, session.begin():
        assert process_once(session, "mailer", event)
        assert process_once(session, "crm-sync", event)
        assert not process_once(session, "mailer", event)
        session.execute(handled_events.insert().values(subscriber="after", uuid_string="x"))
    assert handled(engine, "after") == ["x"], "a duplicate broke the transaction"


def test_concurrent_duplicate_waits_for_the_first_and_is_skipped(pg_engine: Engine) -> None:
    event = DomainEvent("user.registered", {})
    first_recorded = threading.Event()
    let_first_commit = threading.Event()
    results: dict[str, bool] = {}

    def first() -> None:
        with Session(pg_engine) as session, session.begin():
            results["first"] = process_once(session, "mailer", event)
            first_recorded.set()
            let_first_commit.wait(10)

    def second() -> None:
        with Session(pg_engine) as session, session.begin():
            results["second"] = process_once(session, "mailer", event)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_recorded.wait(10)
    threads[1].start()
    time.sleep(0.3)
    assert "second" not in results, "the duplicate did not wait for the first transaction"
    let_first_commit.set()
    for thread in threads:
        thread.join(10)
    assert results == {"first": True, "second": False}


def test_relay_killed_before_marking_sent_sends_again_and_idempotent_handler_runs_once(
    pg_engine: Engine, broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    factory = sessionmaker(pg_engine)
    once, every = f"{name}-once", f"{name}-every"
    subscriber = make_subscriber()
    subscriber.register(idempotent(factory, once)(recorder(once)), once, [f"{name}.#"])

    def record_every_delivery(event: DomainEvent) -> None:
        with factory() as session, session.begin():
            recorder(every)(event, session)

    subscriber.register(record_every_delivery, every, [f"{name}.#"])
    with Session(pg_engine) as session, session.begin():
        events = [add_event(session, f"{name}.order.placed", {"n": n}) for n in range(3)]

    database_url = pg_engine.url.render_as_string(hide_password=False)
    blocker = psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=str(pg_engine.url.database)
    )
    relay = subprocess.Popen(
        [RELAY_COMMAND, "--database-url", database_url, "--url", broker_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The relay can lock and publish the rows, but marking them sent waits.
        blocker.execute("LOCK TABLE domain_event_outbox IN SHARE MODE")
        wait_for(lambda: queue_depth(broker_url, once) == 3, 15, "the batch published")
        relay.kill()
        relay.wait(10)
    finally:
        if relay.poll() is None:
            relay.kill()
        blocker.rollback()
        blocker.close()
    # The killed relay's transaction rolls back once its backend notices; until
    # then its rows are locked and a new relay skips them.
    wait_for(lambda: _unlocked_pending(pg_engine) == 3, 10, "the killed relay's rows released")

    result = subprocess.run(
        [RELAY_COMMAND, "--database-url", database_url, "--url", broker_url, "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "relayed 3 events" in result.stdout, result.stderr
    assert queue_depth(broker_url, once) == 6, "each event twice on the broker"
    assert pending(pg_engine) == 0

    consume_until(subscriber, lambda: len(handled(pg_engine, every)) == 6, settle=0.3)
    uuids = sorted(event.uuid_string for event in events)
    assert sorted(handled(pg_engine, once)) == uuids
    assert sorted(handled(pg_engine, every)) == sorted(uuids * 2)
    delete_queues(broker_url, once, every)


def _unlocked_pending(engine: Engine) -> int:
    with engine.begin() as connection:
        rows = connection.execute(
            select(func.count()).select_from(
                select(outbox_table.c.id)
                .where(outbox_table.c.sent_at.is_(None))
                .with_for_update(skip_locked=True)
                .subquery()
            )
        ).scalar_one()
    return int(rows)
