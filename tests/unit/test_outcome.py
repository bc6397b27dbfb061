"""The outcome decision shared by every consumer: no broker needed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.errors import MAX_RETRY_DELAY, InvalidEvent, Retry
from domain_event_broker.outcome import (
    MAX_REASON_BYTES,
    Action,
    Policy,
    decide,
    failure_headers,
    parse_event,
    retries_of,
    undecodable,
)
from domain_event_broker.topology import RETRIES_HEADER

policies = st.builds(
    Policy,
    subscriber=st.text(min_size=1, max_size=20),
    max_retries=st.integers(0, 10),
    dead_letter=st.booleans(),
)


@given(policies, st.integers(0, 20), st.floats(0, MAX_RETRY_DELAY))
def test_a_retry_waits_until_max_retries_then_fails(policy: Policy, retries: int, delay: float):
    outcome = decide(policy, retries, Retry(delay))
    if retries < policy.max_retries:
        assert outcome.action is Action.RETRY and outcome.delay == delay
    else:
        assert outcome.action is (Action.DEAD_LETTER if policy.dead_letter else Action.DROP)
        assert "max_retries" in outcome.reason


class Interrupting(BaseException):
    pass


@given(policies, st.integers(0, 20))
def test_any_raised_thing_ends_in_one_of_the_five_fates(policy: Policy, retries: int):
    assert decide(policy, retries, None).action is Action.ACK
    assert decide(policy, retries, KeyboardInterrupt()).action is Action.REQUEUE
    assert decide(policy, retries, SystemExit(1)).action is Action.REQUEUE
    failed = Action.DEAD_LETTER if policy.dead_letter else Action.DROP
    assert decide(policy, retries, ValueError("x")).action is failed
    assert decide(policy, retries, Interrupting()).action is failed


@pytest.mark.parametrize("delay", [float("nan"), float("inf"), -1.0, 1e12, MAX_RETRY_DELAY + 1])
def test_retry_refuses_a_delay_the_broker_cannot_take(delay: float):
    with pytest.raises(ValueError, match=str(MAX_RETRY_DELAY)):
        Retry(delay)


@given(st.text())
def test_failure_headers_always_encode_and_are_bounded(text: str):
    policy = Policy("s", dead_letter=True)
    outcome = decide(policy, 0, RuntimeError(text + "\ud800" * 3))
    headers = failure_headers({"other": 1}, outcome, "s", 0, "now")
    for value in headers.values():
        if isinstance(value, str):
            assert len(value.encode("utf-8")) <= MAX_REASON_BYTES


def test_an_exception_whose_str_raises_still_fails_cleanly():
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    outcome = decide(Policy("s", dead_letter=True), 0, Nasty())
    assert outcome.action is Action.DEAD_LETTER
    assert "Nasty" in outcome.exception_type


@given(st.dictionaries(st.text(), st.one_of(st.none(), st.integers(), st.text(), st.binary())))
def test_retries_of_never_raises_on_foreign_headers(headers: dict[str, object]):
    assert retries_of(headers, "s") >= 0
    assert retries_of({RETRIES_HEADER: headers}, "s") == 0


def test_retries_of_counts_legacy_x_death_of_every_delay():
    deaths = [
        {"queue": "s-delay-500", "reason": "expired", "count": 2},
        {"queue": "s-delay-1000", "reason": "expired", "count": 1},
        {"queue": "other-delay-5", "reason": "expired", "count": 7},
    ]
    assert retries_of({"x-death": deaths}, "s") == 3
    assert retries_of({RETRIES_HEADER: 4, "x-death": deaths}, "s") == 4


@pytest.mark.parametrize("body", [b"[" * 5000, b"\xff", b"[]", b"{"])
def test_a_body_that_is_not_an_event_is_invalid_not_a_crash(body: bytes):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body, None, "s")
    outcome = undecodable(Policy("s", dead_letter=True), caught.value)
    assert outcome.action is Action.DEAD_LETTER
    assert not math.isnan(outcome.delay)
