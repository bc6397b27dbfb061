"""Dead letters grouped by how they failed: ids and numbers never split a group."""

from __future__ import annotations

import doctest
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core import fingerprint as fingerprint_module
from domain_event_broker.core.fingerprint import (
    LEGACY_FAILURE,
    UNKNOWN_FAILURE,
    Failure,
    failure_of,
    fingerprint,
    group_failures,
    pattern_of,
)
from domain_event_broker.core.topology import (
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
)

words = st.text(alphabet=st.characters(categories=["L", "P", "Zs"]), max_size=30)
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))


def letter(kind: str, message: str, at: str | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = {EXCEPTION_TYPE_HEADER: kind, EXCEPTION_MESSAGE_HEADER: message}
    if at is not None:
        headers[FAILED_AT_HEADER] = at
    return headers


@given(before=words, after=words, first=numbers, second=numbers)
def test_numbers_in_the_message_do_not_change_the_fingerprint(
    before: str, after: str, first: float, second: float
) -> None:
    one = failure_of(letter("KeyError", f"{before} {first} {after}"))
    two = failure_of(letter("KeyError", f"{before} {second} {after}"))
    assert fingerprint(one) == fingerprint(two)


@given(before=words, after=words, first=st.uuids(), second=st.uuids())
def test_ids_in_the_message_do_not_change_the_fingerprint(
    before: str, after: str, first: uuid.UUID, second: uuid.UUID
) -> None:
    for one_id, two_id in ((str(first), str(second)), (first.hex, second.hex)):
        one = failure_of(letter("LookupError", f"{before} order {one_id} {after}"))
        two = failure_of(letter("LookupError", f"{before} order {two_id} {after}"))
        assert fingerprint(one) == fingerprint(two)
        assert "<id>" in one.pattern


@given(message=st.text(max_size=200), first=words, second=words)
def test_another_exception_type_is_another_group(message: str, first: str, second: str) -> None:
    one = failure_of(letter("Err" + first, message))
    two = failure_of(letter("Err" + second, message))
    assert (fingerprint(one) == fingerprint(two)) == (first == second)


def test_different_words_are_different_groups() -> None:
    declined = failure_of(letter("PaymentError", "card 4242 declined"))
    expired = failure_of(letter("PaymentError", "card 4242 expired"))
    assert declined.pattern == "card <n> declined"
    assert fingerprint(declined) != fingerprint(expired)


@given(st.text(max_size=300))
def test_a_pattern_is_stable(message: str) -> None:
    pattern = pattern_of(message)
    assert pattern_of(pattern) == pattern
    assert fingerprint(Failure("E", pattern)) == fingerprint(Failure("E", pattern_of(message)))


def test_letters_from_3x_form_a_group_of_their_own() -> None:
    legacy = {"x-death": [{"queue": "orders", "reason": "rejected", "count": 1}]}
    assert failure_of(legacy) == Failure("", LEGACY_FAILURE)
    assert failure_of({}) == Failure("", UNKNOWN_FAILURE)
    assert failure_of(None) == Failure("", UNKNOWN_FAILURE)
    groups = group_failures([legacy, letter("KeyError", "'x'"), legacy, {}])
    assert [(group.failure.pattern, group.count) for group in groups] == [
        (LEGACY_FAILURE, 2),
        ("'x'", 1),
        (UNKNOWN_FAILURE, 1),
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["KeyError", "ValueError", "TimeoutError"]),
            st.integers(0, 10**9),
            st.datetimes().map(lambda moment: moment.isoformat()),
        ),
        max_size=60,
    )
)
def test_groups_count_every_letter_once_with_first_and_last_seen(
    rows: list[tuple[str, int, str]],
) -> None:
    letters = [letter(kind, f"customer {number} not found", at) for kind, number, at in rows]
    groups = group_failures(letters)
    assert sum(group.count for group in groups) == len(rows)
    assert sorted(p for group in groups for p in group.positions) == list(range(len(rows)))
    assert [group.count for group in groups] == sorted((g.count for g in groups), reverse=True)
    for group in groups:
        mine = [rows[position] for position in group.positions]
        assert {kind for kind, _, _ in mine} == {group.failure.exception_type}
        assert group.count == len(mine)
        assert group.first_seen == min(at for _, _, at in mine)
        assert group.last_seen == max(at for _, _, at in mine)
        assert group.positions == sorted(group.positions), "queue order kept"


def test_bytes_headers_read_as_text() -> None:
    assert failure_of({EXCEPTION_TYPE_HEADER: b"KeyError", EXCEPTION_MESSAGE_HEADER: b"id 7"}) == (
        Failure("KeyError", "id <n>")
    )


def test_the_examples_in_the_module_run() -> None:
    assert doctest.testmod(fingerprint_module).failed == 0
