"""The outage log: backoff between attempts, a WARNING at most once a minute, INFO on recovery."""

from __future__ import annotations

import logging

import pytest

from domain_event_broker.connection import Backoff
from domain_event_broker.outage import OutageLog, reconnecting


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoJitter(Backoff):
    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return ceiling


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outage(clock: Clock) -> OutageLog:
    return OutageLog(
        logging.getLogger("test.outage"),
        "the relay",
        backoff=NoJitter(initial=0.5, maximum=30.0),
        clock=clock,
    )


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_first_failure_warns_then_at_most_once_a_minute_with_a_count(
    outage: OutageLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    outage.failed(ConnectionError("refused"))
    assert records(caplog, logging.WARNING) == [
        "the relay failed: refused; retrying with backoff (next in 0.5 s)"
    ]
    for _ in range(29):  # one failure every 2 s for 58 s: no new warning
        clock.now += 2
        outage.failed(ConnectionError("refused"))
    assert len(records(caplog, logging.WARNING)) == 1
    clock.now += 2  # 60 s after the first warning
    outage.failed(ConnectionError("still refused"))
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "still failing after 60 s: 30 failed attempts since the last warning" in warnings[1]
    assert "still refused" in warnings[1]
    clock.now += 59
    outage.failed(ConnectionError("refused"))
    assert len(records(caplog, logging.WARNING)) == 2
    clock.now += 1
    outage.failed(ConnectionError("refused"))
    assert "2 failed attempts since the last warning" in records(caplog, logging.WARNING)[2]


def test_recovery_is_one_info_with_the_count_and_resets_everything(
    outage: OutageLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "test.outage")
    outage.succeeded()
    assert caplog.records == [], "a success without an outage is not news"
    for _ in range(5):
        outage.failed(OSError("down"))
        clock.now += 10
    assert outage.failing
    outage.succeeded()
    assert records(caplog, logging.INFO) == [
        "the relay working again after 5 failed attempts in 50 s"
    ]
    assert not outage.failing
    outage.succeeded()
    assert len(records(caplog, logging.INFO)) == 1
    outage.failed(OSError("down again"))  # a new outage: a WARNING at once
    assert "the relay failed: down again" in records(caplog, logging.WARNING)[-1]


def test_backoff_grows_to_its_cap_and_starts_afresh_after_recovery(outage: OutageLog) -> None:
    delays = [outage.failed(OSError("down")) for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    outage.succeeded()
    assert outage.failed(OSError("down")) == 0.5


def test_traceback_only_when_asked(outage: OutageLog, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "test.outage")
    try:
        raise RuntimeError("database gone")
    except RuntimeError as error:
        outage.failed(error, traceback=True)
    assert caplog.records[0].exc_info is not None
    outage.succeeded()
    outage.failed(ConnectionError("refused"))
    assert caplog.records[-1].exc_info is None


def test_default_backoff_has_jitter_within_its_bounds() -> None:
    outage = OutageLog(logging.getLogger("test.outage"), "x")
    delays = [outage.failed(OSError("down")) for _ in range(12)]
    assert all(0 < delay <= 30.0 for delay in delays)
    assert delays[-1] >= 15.0


def test_a_lost_connection_is_one_warning_and_its_end_a_warning_too(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    outage = OutageLog(
        logging.getLogger("test.outage"),
        "RabbitMQ at amqp://guest:***@host/",
        backoff=NoJitter(initial=0.5, maximum=30.0),
        wording=reconnecting(then="consuming {orders} again"),
        clock=clock,
    )
    for _ in range(3):
        outage.failed(ConnectionError("refused"))
        clock.now += 4
    assert records(caplog, logging.WARNING) == [
        "lost the connection to RabbitMQ at amqp://guest:***@host/ (ConnectionError: refused); "
        "reconnecting with backoff"
    ]
    assert len(records(caplog, logging.DEBUG)) == 2
    outage.succeeded()
    # Whoever reads WARNINGs only saw the outage begin: they see it end as well.
    assert records(caplog, logging.WARNING)[-1] == (
        "reconnected to RabbitMQ at amqp://guest:***@host/ after 12.0 s; consuming {orders} again"
    )


def test_error_text_false_names_the_type_only(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    outage = OutageLog(
        logging.getLogger("test.outage"),
        "RabbitMQ at amqp://app:***@host/",
        wording=reconnecting("asyncio subscriber", error_text=False),
        clock=clock,
    )
    leaky = OSError("cannot connect to amqp://app:s3cret-pw@host/")
    outage.failed(leaky)
    outage.failed(leaky)
    clock.now += 61
    outage.failed(leaky)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0] == (
        "asyncio subscriber lost RabbitMQ at amqp://app:***@host/ (OSError); "
        "reconnecting with backoff"
    )
    assert all("s3cret" not in line for line in lines)
