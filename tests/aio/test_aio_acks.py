"""The ack bookkeeping of the asyncio subscriber (no broker): every handled event is acked
once, and no multiple ack covers an event that is not handled yet."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.aio.subscriber import _Acks


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_handled_events_are_acked_once_and_never_unhandled_ones(
    handled_flags: list[bool], random: Any
) -> None:
    acks = _Acks()
    tags = list(range(1, len(handled_flags) + 1))
    for tag in tags:
        acks.delivered(tag)
    outstanding = set(tags)  # what the broker's channel holds unacked
    handled_tags = {tag for tag, ok in zip(tags, handled_flags, strict=True) if ok}
    order = tags[:]
    random.shuffle(order)  # handlers finish in any order (concurrency > 1)
    reported: set[int] = set()
    for number, tag in enumerate(order):
        if tag in handled_tags:
            reported.add(tag)
            acks.handled.append((tag, None))  # type: ignore[arg-type]
        else:  # settled on its own (a retry copy stored, then acked alone)
            outstanding.remove(tag)
            acks.settled(tag)
        if number % 3 == 0 or number == len(order) - 1:  # a flush now and then
            last, singles = acks.take()
            if last:
                assert last in outstanding, "a multiple ack must name an unacked tag"
                covered = {t for t in outstanding if t <= last}
                assert covered <= reported, "a multiple ack covered an event not handled yet"
                outstanding -= covered
            for single in singles:
                assert single in outstanding
                outstanding.remove(single)
    assert outstanding == set()
