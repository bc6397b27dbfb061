"""Where a retry or dead-letter copy goes and what it carries; the pause after refused copies."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.copies import (
    COPIED_PROPERTIES,
    CopyPlan,
    RefusalBackoff,
    copied_fields,
    plan_copy,
)
from domain_event_broker.core.outcome import (
    MAX_TRACEBACK_BYTES,
    Action,
    Outcome,
    Policy,
    decide,
)
from domain_event_broker.core.topology import (
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    RETRIES_HEADER,
    ROUTING_KEY_HEADER,
    TRACEBACK_HEADER,
    SubscriberTopology,
)
from domain_event_broker.core.wait_queues import wait_delay_ms
from domain_event_broker.errors import Retry

TOPOLOGY = SubscriberTopology(name="orders", binding_keys=("order.*",), dead_letter=True)
POLICY = Policy("orders", max_retries=3, dead_letter=True)
FAILED_AT = "2024-05-01T12:00:00+00:00"
KEY = "order.created"

delays = st.floats(min_value=0, max_value=3600, allow_nan=False, allow_infinity=False)


def original(retries: int) -> dict[str, Any]:
    return {"x-trace-id": "abc123", RETRIES_HEADER: retries, "x-tenant": 7}


# Retry copies -------------------------------------------------------------------


@given(delay=delays, retries=st.integers(0, 2), fallback=st.booleans())
def test_a_retry_goes_through_the_default_exchange_into_its_wait_queue(
    delay: float, retries: int, fallback: bool
) -> None:
    outcome = decide(POLICY, retries, Retry(delay))
    assert outcome.action is Action.RETRY
    headers = original(retries)
    before = dict(headers)
    plan = plan_copy(
        TOPOLOGY, outcome, headers, retries, KEY, failed_at=FAILED_AT, fallback=fallback
    )
    delay_ms = wait_delay_ms(delay)  # jittered delays share wait queues
    assert plan == CopyPlan(
        exchange="",
        routing_key=f"orders-wait-{delay_ms}",
        headers={
            "x-trace-id": "abc123",
            "x-tenant": 7,
            RETRIES_HEADER: retries + 1,
            ROUTING_KEY_HEADER: KEY,
        },
        wait_queue_ms=delay_ms,
    )
    assert (plan.exchange, plan.routing_key) == TOPOLOGY.retry_destination(delay_ms)
    assert headers == before, "the delivery's own headers are not touched"
    assert plan.headers is not headers


@pytest.mark.parametrize(
    ("delay", "delay_ms"), [(0, 0), (0.0004, 0), (0.0006, 1), (1.5, 1500), (2.5, 2500), (60, 60000)]
)
def test_the_wait_queue_is_named_after_the_delay_in_milliseconds(
    delay: float, delay_ms: int
) -> None:
    plan = plan_copy(TOPOLOGY, decide(POLICY, 0, Retry(delay)), None, 0, KEY, failed_at=FAILED_AT)
    assert (plan.routing_key, plan.wait_queue_ms) == (f"orders-wait-{delay_ms}", delay_ms)
    assert plan.headers == {RETRIES_HEADER: 1, ROUTING_KEY_HEADER: KEY}


# Dead letters -------------------------------------------------------------------


def failed_outcome() -> Outcome:
    try:
        raise ValueError("amount must be positive")
    except ValueError as error:
        return decide(POLICY, 2, error)


#: The frame that raised it, then the error (no source lines: the core reads no files).
FAILED_TRACEBACK = (
    "Traceback (most recent call last):\n"
    f'  File "{__file__}", line {failed_outcome.__code__.co_firstlineno + 2}, in failed_outcome\n'
    "ValueError: amount must be positive"
)


def deep_failure(depth: int, message: str) -> Outcome:
    def recurse(level: int) -> None:
        if level == 0:
            raise RuntimeError(message)
        recurse(level - 1)

    try:
        recurse(depth)
    except RuntimeError as error:
        return decide(POLICY, 0, error)
    raise AssertionError("recurse did not raise")


@given(depth=st.integers(0, 200), message=st.text(max_size=3000))
def test_a_dead_letter_carries_the_end_of_the_traceback_in_at_most_4_kib(
    depth: int, message: str
) -> None:
    plan = plan_copy(TOPOLOGY, deep_failure(depth, message), None, 0, KEY, failed_at=FAILED_AT)
    traceback = plan.headers[TRACEBACK_HEADER]
    assert len(traceback.encode("utf-8")) <= MAX_TRACEBACK_BYTES
    # The end, where it was raised, is what stays: the innermost frame and the error.
    error_line = "RuntimeError: " + message.encode("utf-8", "replace").decode("utf-8")
    if len(error_line.encode()) < MAX_TRACEBACK_BYTES - 100:
        assert traceback.endswith(", in recurse\n" + error_line)
    if depth < 10 and len(message.encode()) < 1000:
        assert traceback.startswith("Traceback (most recent call last):\n")
        assert traceback.count(", in recurse\n") == depth + 1


def test_a_retry_copy_carries_no_traceback() -> None:
    plan = plan_copy(TOPOLOGY, decide(POLICY, 0, Retry(1)), None, 0, KEY, failed_at=FAILED_AT)
    assert TRACEBACK_HEADER not in plan.headers


def test_a_dead_letter_goes_to_the_dead_letter_exchange_with_the_events_key() -> None:
    outcome = failed_outcome()
    assert outcome.action is Action.DEAD_LETTER
    headers = original(2)
    before = dict(headers)
    plan = plan_copy(TOPOLOGY, outcome, headers, 2, KEY, failed_at=FAILED_AT)
    assert plan == CopyPlan(
        exchange="orders-dlx",
        routing_key=KEY,
        headers={
            "x-trace-id": "abc123",
            "x-tenant": 7,
            RETRIES_HEADER: 2,
            FAILED_SUBSCRIBER_HEADER: "orders",
            EXCEPTION_TYPE_HEADER: "ValueError",
            EXCEPTION_MESSAGE_HEADER: "amount must be positive",
            FAILED_AT_HEADER: FAILED_AT,
            TRACEBACK_HEADER: FAILED_TRACEBACK,
        },
        wait_queue_ms=None,
    )
    assert ROUTING_KEY_HEADER not in plan.headers
    assert headers == before


def test_a_dead_letter_falls_back_straight_into_the_dead_letter_queue() -> None:
    headers = original(2)
    before = dict(headers)
    plan = plan_copy(
        TOPOLOGY, failed_outcome(), headers, 2, KEY, failed_at=FAILED_AT, fallback=True
    )
    assert plan == CopyPlan(
        exchange="",
        routing_key="orders-dl",
        headers={
            "x-trace-id": "abc123",
            "x-tenant": 7,
            RETRIES_HEADER: 2,
            FAILED_SUBSCRIBER_HEADER: "orders",
            EXCEPTION_TYPE_HEADER: "ValueError",
            EXCEPTION_MESSAGE_HEADER: "amount must be positive",
            FAILED_AT_HEADER: FAILED_AT,
            TRACEBACK_HEADER: FAILED_TRACEBACK,
            ROUTING_KEY_HEADER: KEY,
        },
        wait_queue_ms=None,
    )
    assert headers == before


def test_a_retry_past_max_retries_is_dead_lettered_with_the_reason() -> None:
    outcome = decide(POLICY, 3, Retry(5))
    plan = plan_copy(TOPOLOGY, outcome, None, 3, KEY, failed_at=FAILED_AT)
    assert (plan.exchange, plan.routing_key) == ("orders-dlx", KEY)
    assert plan.headers[EXCEPTION_TYPE_HEADER] == "domain_event_broker.errors.Retry"
    assert plan.headers[EXCEPTION_MESSAGE_HEADER] == "exceeded max_retries (3)"
    assert plan.headers[RETRIES_HEADER] == 3


@pytest.mark.parametrize(
    ("raised", "dead_letter", "action"),
    [
        (None, True, "ack"),
        (ValueError("x"), False, "drop"),
        (KeyboardInterrupt(), True, "requeue"),
        (SystemExit(1), False, "requeue"),
    ],
)
def test_no_copy_settles_an_ack_a_drop_or_a_requeue(
    raised: BaseException | None, dead_letter: bool, action: str
) -> None:
    outcome = decide(Policy("orders", max_retries=3, dead_letter=dead_letter), 0, raised)
    assert outcome.action.value == action
    with pytest.raises(ValueError, match=f"no copy settles a delivery to {action}$"):
        plan_copy(TOPOLOGY, outcome, {}, 0, KEY, failed_at=FAILED_AT)
    with pytest.raises(ValueError, match=f"no copy settles a delivery to {action}$"):
        plan_copy(TOPOLOGY, outcome, {}, 0, KEY, failed_at=FAILED_AT, fallback=True)


# Copied properties --------------------------------------------------------------

values = st.one_of(st.none(), st.text(max_size=20), st.integers(0, 2**31))


@given(st.fixed_dictionaries({name: values for name in COPIED_PROPERTIES}))
def test_a_copy_keeps_exactly_the_copied_properties(kept: dict[str, Any]) -> None:
    properties = SimpleNamespace(
        **kept,
        user_id="someone-else",
        expiration="60000",
        delivery_mode=1,
        headers={"old": True},
        cluster_id="c1",
    )
    new_headers = {RETRIES_HEADER: 1}
    fields = copied_fields(properties, new_headers)
    assert fields == {**kept, "headers": new_headers, "delivery_mode": 2}
    assert fields["headers"] is new_headers
    assert "user_id" not in fields
    assert "expiration" not in fields


def test_a_property_missing_on_the_original_is_copied_as_none() -> None:
    fields = copied_fields(SimpleNamespace(content_type="application/json"), {})
    assert fields == {
        **dict.fromkeys(COPIED_PROPERTIES),
        "content_type": "application/json",
        "headers": {},
        "delivery_mode": 2,
    }


def test_the_copied_properties_are_the_documented_ones() -> None:
    assert COPIED_PROPERTIES == (
        "content_type",
        "content_encoding",
        "priority",
        "correlation_id",
        "reply_to",
        "message_id",
        "timestamp",
        "type",
        "app_id",
    )


# Refused copies -----------------------------------------------------------------


@given(refusals=st.integers(1, 40))
def test_refusal_pauses_double_from_initial_up_to_the_maximum(refusals: int) -> None:
    backoff = RefusalBackoff(initial=0.5, maximum=15.0)
    pauses = []
    firsts = []
    for _ in range(refusals):
        firsts.append(backoff.refused(now=100.0))
        pauses.append(backoff.paused_until - 100.0)
    assert pauses == [min(15.0, 0.5 * 2**i) for i in range(refusals)]
    assert firsts == [True] + [False] * (refusals - 1), "a burst is logged once, at its start"
    assert backoff.paused(100.0 + pauses[-1] - 0.01)
    assert not backoff.paused(100.0 + pauses[-1])
    assert backoff.stored() == refusals
    assert backoff.stored() == 0, "the count was reset"
    assert backoff.paused_until == 0.0
    assert not backoff.paused(0.0)
    assert backoff.refused(now=200.0), "the next refusal starts a new burst"
    assert backoff.paused_until == 200.5


def test_refusal_backoff_defaults() -> None:
    backoff = RefusalBackoff()
    pauses = []
    for _ in range(7):
        backoff.refused(now=0.0)
        pauses.append(backoff.paused_until)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]  # at most one redelivery a second


def test_a_stored_copy_without_refusals_is_no_burst() -> None:
    backoff = RefusalBackoff()
    assert backoff.stored() == 0
    assert not backoff.paused(0.0)
