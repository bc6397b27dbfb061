"""Reading a delivery and logging its outcome, as every driver does it (no broker)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.handling import (
    KINDS,
    Described,
    Unreadable,
    log_outcome,
    read_event,
)
from domain_event_broker.core.outcome import Action, Policy, decide
from domain_event_broker.core.topology import RETRIES_HEADER
from domain_event_broker.errors import Retry
from domain_event_broker.events import DomainEvent

LOGGER = "test.handling"
DELIVERY = Described("s", "id-1", "user.registered", "s-dl")
INVALID = "domain_event_broker.errors.InvalidEvent"


# Reading ------------------------------------------------------------------------


def test_a_valid_body_is_its_event_with_the_retries_counted() -> None:
    sent = DomainEvent("user.registered", {"id": 1})
    body = sent.to_json().encode()
    event = read_event(body, {RETRIES_HEADER: 2}, Policy("s"))
    assert isinstance(event, DomainEvent)
    assert event.routing_key == "user.registered"
    assert event.data == {"id": 1}
    assert event.uuid_string == sent.uuid_string
    assert event.retries == 2
    first = read_event(body, None, Policy("s"))
    assert isinstance(first, DomainEvent)
    assert first.retries == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"42", b"null", b"\xff\xfe"])
@pytest.mark.parametrize("dead_letter", [False, True])
def test_a_body_that_is_no_event_is_unreadable_without_an_error(
    body: bytes, dead_letter: bool
) -> None:
    read = read_event(body, {}, Policy("s", dead_letter=dead_letter))
    assert isinstance(read, Unreadable)
    assert read.why == "is not a domain event"
    assert read.error is None
    assert read.outcome.action is (Action.DEAD_LETTER if dead_letter else Action.DROP)
    assert read.outcome.exception_type == INVALID
    assert read.outcome.reason.startswith("message body is ")


class ExplodingHeaders(Mapping[str, object]):
    def __getitem__(self, key: str) -> object:
        raise RuntimeError("header table is corrupt")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_headers_nobody_foresaw_are_unreadable_with_their_error() -> None:
    body = DomainEvent("user.registered", {"id": 1}).to_json().encode()
    read = read_event(body, ExplodingHeaders(), Policy("s", dead_letter=True))
    assert isinstance(read, Unreadable)
    assert read.why == "could not be read"
    assert isinstance(read.error, RuntimeError)
    assert read.outcome.action is Action.DEAD_LETTER
    assert read.outcome.exception_type == "RuntimeError"
    assert read.outcome.reason == "header table is corrupt"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
bodies = st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode())
headers = st.none() | st.dictionaries(
    st.sampled_from([RETRIES_HEADER, "x-death", "other"]),
    st.none() | st.integers() | st.text() | st.binary() | st.lists(st.integers(), max_size=3),
)


@given(body=bodies, headers=headers, dead_letter=st.booleans())
def test_reading_any_body_never_raises(
    body: bytes, headers: dict[str, object] | None, dead_letter: bool
) -> None:
    read = read_event(body, headers, Policy("s", dead_letter=dead_letter))
    if isinstance(read, Unreadable):
        assert read.outcome.action is (Action.DEAD_LETTER if dead_letter else Action.DROP)
    else:
        assert isinstance(read, DomainEvent)
        assert read.retries >= 0


# Logging ------------------------------------------------------------------------


def capturing(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    # In the test body: pytest gives the call phase its own capture handler, at
    # the configured log_level (INFO), so a fixture's set_level would miss DEBUG.
    caplog.set_level(logging.DEBUG, LOGGER)
    return logging.getLogger(LOGGER)


def test_a_handled_event_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    log = capturing(caplog)
    log_outcome(log, DELIVERY, decide(Policy("s"), 0, None))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "subscriber s: handled event id-1 (user.registered)")
    ]


def test_a_retry_is_one_info_with_its_delay_and_count(caplog: pytest.LogCaptureFixture) -> None:
    log = capturing(caplog)
    outcome = decide(Policy("s", max_retries=3, dead_letter=True), 1, Retry(2.5))
    log_outcome(log, DELIVERY, outcome, retries=1, max_retries=3, raised=Retry(2.5))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "subscriber s: event id-1 (user.registered) will be retried in 2.5 s (retry 2 of 3)",
        )
    ]
    assert caplog.records[0].exc_info is None


def test_a_dead_letter_is_an_error_with_the_handlers_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = capturing(caplog)
    try:
        raise ValueError("amount must be positive")
    except ValueError as error:
        raised = error
    outcome = decide(Policy("s", dead_letter=True), 0, raised)
    log_outcome(log, DELIVERY, outcome, raised=raised)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "subscriber s: event id-1 (user.registered) failed: ValueError: amount must be "
        "positive; moved to dead-letter queue s-dl"
    )
    assert record.exc_info is not None
    assert record.exc_info[1] is raised
    assert record.exc_info[2] is raised.__traceback__


def test_a_dropped_event_is_an_error_that_says_how_to_keep_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = capturing(caplog)
    raised = KeyError("id")
    log_outcome(log, DELIVERY, decide(Policy("s"), 0, raised), raised=raised)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "subscriber s: event id-1 (user.registered) failed: KeyError: 'id'; "
        "dropped (register with dead_letter=True to keep failed events)"
    )


def test_an_unreadable_body_is_an_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = capturing(caplog)
    read = read_event(b"not json", {}, Policy("s", dead_letter=True))
    assert isinstance(read, Unreadable)
    described = Described("s", None, "user.registered", "s-dl")
    log_outcome(log, described, read.outcome, raised=read.error, why=read.why)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith(
        f"subscriber s: event None (user.registered) is not a domain event: {INVALID}: "
        "message body is not JSON"
    )
    assert message.endswith("; moved to dead-letter queue s-dl")
    assert record.exc_info is None


class Interrupting(BaseException):
    pass


def test_a_base_exception_failure_has_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = capturing(caplog)
    raised = Interrupting("stop")
    outcome = decide(Policy("s", dead_letter=True), 0, raised)
    assert outcome.action is Action.DEAD_LETTER
    log_outcome(log, DELIVERY, outcome, raised=raised)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "moved to dead-letter queue s-dl" in record.getMessage()
    assert record.exc_info is None


def test_an_interrupt_warns_that_the_subscriber_stops(caplog: pytest.LogCaptureFixture) -> None:
    log = capturing(caplog)
    raised = KeyboardInterrupt()
    outcome = decide(Policy("s", dead_letter=True), 0, raised)
    assert outcome.action is Action.REQUEUE
    log_outcome(log, DELIVERY, outcome, raised=raised)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "subscriber s: handler raised KeyboardInterrupt on event id-1 (user.registered): "
            "stopping the subscriber; the event goes back to its queue",
        )
    ]


def test_every_settled_outcome_has_a_metrics_name() -> None:
    assert KINDS == {
        Action.ACK: "handled",
        Action.RETRY: "retried",
        Action.DEAD_LETTER: "dead_lettered",
        Action.DROP: "dropped",
    }
