"""The questions of `dead-letters replay --interactive` (no broker: the callback alone)."""

from __future__ import annotations

from collections import deque

import pytest

from domain_event_broker.replay import DISCARD, LEAVE, RETRY, interactive_callback


def ask(*answers: str | None) -> tuple[str, list[str]]:
    pending = deque(answers)
    written: list[str] = []
    callback = interactive_callback(lambda timeout: pending.popleft(), written.append)
    return callback(body=b'{"n": 1}'), written


@pytest.mark.parametrize(
    ("answers", "decision"),
    [
        (("r",), RETRY),
        (("Discard",), DISCARD),
        (("l",), LEAVE),
        ((None,), LEAVE),  # no answer in time: left where it is
        (("x", "r"), RETRY),  # a typo asks again, it never decides
        (("", "?", "d"), DISCARD),
        (("x", None), LEAVE),
    ],
)
def test_each_answer_decides_and_an_unknown_one_asks_again(
    answers: tuple[str | None, ...], decision: str
) -> None:
    decided, written = ask(*answers)
    assert decided == decision
    asked_again = sum("is none of R, D or L" in line for line in written)
    assert asked_again == sum(1 for answer in answers[:-1] if answer is not None)
