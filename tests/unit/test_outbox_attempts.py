"""Refused outbox rows: when they are tried again, when parked, what counts as a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.errors import (
    BrokerUnavailable,
    ConfirmTimeout,
    EventRefused,
    EventTooLarge,
    InvalidRoutingKey,
    PublishError,
    TopologyMismatch,
)
from domain_event_broker.messages import OutgoingMessage, PublishOutcome
from domain_event_broker.outbox.attempts import (
    MAX_ATTEMPTS,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    RetryPolicy,
    is_outage,
    sort_outcomes,
)


def test_defaults_park_a_row_after_ten_refusals_in_about_51_minutes() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.first_delay, policy.max_delay) == (
        MAX_ATTEMPTS,
        RETRY_DELAY,
        MAX_RETRY_DELAY,
    )
    delays = [policy.delay_after(attempts) for attempts in range(1, 11)]
    assert delays == [10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 900.0, 900.0, None]
    assert sum(d for d in delays if d is not None) == pytest.approx(51 * 60, abs=60)


@given(
    max_attempts=st.integers(1, 50),
    first=st.floats(0, 1000),
    extra=st.floats(0, 10000),
    attempts=st.integers(1, 10**6),
)
def test_delays_never_shrink_never_pass_the_cap_and_park_exactly_at_max_attempts(
    max_attempts: int, first: float, extra: float, attempts: int
) -> None:
    policy = RetryPolicy(max_attempts, first, first + extra)
    delay = policy.delay_after(attempts)
    if attempts >= max_attempts:
        assert delay is None
        return
    assert delay is not None
    assert first <= delay <= first + extra
    following = policy.delay_after(attempts + 1)
    assert following is None or following >= delay


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="first_delay <= max_delay"):
        RetryPolicy(first_delay=10, max_delay=5)


def outcome(error: BaseException | None = None) -> PublishOutcome:
    return PublishOutcome(OutgoingMessage("shop.order.placed", b"{}", "id"), error)


def test_only_confirmed_rows_are_sent_and_a_refusal_is_about_its_row_alone() -> None:
    policy = RetryPolicy(max_attempts=3, first_delay=5, max_delay=60)
    result = sort_outcomes(
        [1, 2, 3, 4],
        [0, 0, 2, 1],
        [outcome(), outcome(EventRefused("nack")), outcome(EventRefused("nack")), outcome()],
        policy,
    )
    assert result.sent == [1, 4]
    assert [(r.id, r.attempts, r.delay, r.parked) for r in result.refused] == [
        (2, 1, 5.0, False),
        (3, 3, None, True),
    ]
    assert result.refused[0].error == "EventRefused: nack"
    assert result.outage is None


def test_an_unreachable_broker_touches_no_row() -> None:
    lost = BrokerUnavailable("lost the connection")
    result = sort_outcomes(
        [1, 2, 3],
        [0, 0, 0],
        [outcome(), outcome(lost), outcome(TopologyMismatch("exchange"))],
        RetryPolicy(),
    )
    assert result.sent == [1]
    assert result.refused == []
    assert result.outage is lost


def test_a_confirm_timeout_is_an_outage_however_often_it_happens() -> None:
    # A memory or disk alarm blocks publishers for as long as it lasts: no
    # confirm comes, and that must never count as the row's refusal.
    policy = RetryPolicy(max_attempts=2, first_delay=1, max_delay=1)
    late = ConfirmTimeout("RabbitMQ at amqp://guest:***@host/ is blocking publishers")
    for _ in range(10):
        result = sort_outcomes([1, 2], [0, 1], [outcome(late), outcome()], policy)
        assert result.refused == []
        assert result.outage is late
        assert result.sent == [2]


def test_a_refusal_counts_an_attempt_and_parks_the_row_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, first_delay=1, max_delay=1)
    nack = EventRefused("basic.nack")
    [first] = sort_outcomes([1], [0], [outcome(nack)], policy).refused
    [second] = sort_outcomes([1], [first.attempts], [outcome(nack)], policy).refused
    assert (first.attempts, first.parked, second.attempts, second.parked) == (1, False, 2, True)
    assert second.error == "EventRefused: basic.nack"


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (BrokerUnavailable("down"), True),
        (TopologyMismatch("exchange"), True),
        (ConfirmTimeout("no confirm"), True),
        (EventRefused("nack"), False),
        (PublishError("the publisher failed internally"), True),
        (PublishError("the publisher for amqp://h/ was closed"), True),
        (EventTooLarge("too large", size=2, limit=1), False),
        (InvalidRoutingKey("bad routing key"), False),
        (ValueError("bad routing key"), False),
        (TypeError("not bytes"), False),
    ],
)
def test_outage_or_refusal(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage


def test_both_kinds_are_still_publish_errors_for_callers_of_3x() -> None:
    assert issubclass(EventRefused, PublishError)
    assert issubclass(ConfirmTimeout, PublishError)


@given(st.lists(st.sampled_from(["sent", "refused", "timeout", "lost"]), min_size=1, max_size=30))
def test_every_row_is_sent_refused_or_left_untried_and_only_refusals_count(
    kinds: list[str],
) -> None:
    errors: dict[str, BaseException | None] = {
        "sent": None,
        "refused": EventRefused("nack"),
        "timeout": ConfirmTimeout("late"),
        "lost": BrokerUnavailable("down"),
    }
    ids = list(range(len(kinds)))
    result = sort_outcomes(
        ids, [0] * len(ids), [outcome(errors[kind]) for kind in kinds], RetryPolicy()
    )
    assert result.sent == [i for i, kind in zip(ids, kinds, strict=True) if kind == "sent"]
    assert [r.id for r in result.refused] == [
        i for i, kind in zip(ids, kinds, strict=True) if kind == "refused"
    ]
    assert all(r.attempts == 1 for r in result.refused)
    assert (result.outage is not None) == any(kind in ("timeout", "lost") for kind in kinds)


def test_the_publishers_own_failure_counts_against_no_row() -> None:
    # The publisher stopped or failed internally: nothing the broker said about
    # these rows, so however often it happens no row gets nearer to being parked.
    failed = PublishError("the publisher for amqp://guest:***@host/ failed internally")
    policy = RetryPolicy(max_attempts=1)
    for _ in range(5):
        result = sort_outcomes([1, 2], [0, 0], [outcome(failed), outcome()], policy)
        assert (result.sent, result.refused, result.outage) == ([2], [], failed)


@given(
    before=st.integers(0, 100),
    size=st.integers(2, 2**40),
    max_attempts=st.integers(1, 50),
)
def test_an_event_too_large_is_parked_at_once_with_its_size_and_the_limit(
    before: int, size: int, max_attempts: int
) -> None:
    limit = size // 2
    error = EventTooLarge("RabbitMQ refused it for its size", size=size, limit=limit)
    result = sort_outcomes(
        [7, 8], [before, 0], [outcome(error), outcome()], RetryPolicy(max_attempts)
    )
    assert result.sent == [8], "the rows behind it go out in the same pass"
    [parked] = result.refused
    assert (parked.id, parked.attempts, parked.parked) == (7, before + 1, True)
    assert parked.error == f"max_message_size: the event is {size} bytes, the limit {limit}"


def test_an_event_too_large_without_figures_is_parked_with_the_brokers_words() -> None:
    error = EventTooLarge("message size 5 is larger than max size 4")
    [parked] = sort_outcomes([1], [0], [outcome(error)], RetryPolicy()).refused
    assert parked.parked
    assert parked.error == "max_message_size: message size 5 is larger than max size 4"


def test_a_long_error_is_cut_to_valid_utf8() -> None:
    [refusal] = sort_outcomes([1], [0], [outcome(EventRefused("é" * 5000))], RetryPolicy()).refused
    assert len(refusal.error.encode("utf-8")) <= 2000
    refusal.error.encode("utf-8")


def test_docstring_examples() -> None:
    import doctest

    from domain_event_broker import outage
    from domain_event_broker.outbox import attempts

    for module in (attempts, outage):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
