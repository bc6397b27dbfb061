"""Storing failure copies, the pure parts: the refusal backoff and the confirm bookkeeping.

A broker that withholds the confirm of a copy cannot be made on demand with a
single shared node (tests/test_hostile_delivery.py freezes a proxy instead);
here the timeout path of the confirm bookkeeping is checked directly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pika.spec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.copies import RefusalBackoff
from domain_event_broker.subscriber.copy_channel import Confirm, CopyChannel


@given(st.lists(st.floats(min_value=0, max_value=0.2), min_size=1, max_size=60))
def test_refusals_pause_longer_and_longer_up_to_the_cap(gaps: list[float]) -> None:
    backoff = RefusalBackoff(initial=0.5, maximum=15.0)
    now = 0.0
    pauses = []
    firsts = []
    for gap in gaps:
        now += gap
        firsts.append(backoff.refused(now))
        pauses.append(round(backoff.paused_until - now, 6))
    assert firsts == [True] + [False] * (len(gaps) - 1), "logged once per burst"
    assert pauses == sorted(pauses)
    assert all(0.5 <= pause <= 15.0 for pause in pauses)
    assert backoff.stored() == len(gaps)
    assert not backoff.paused(now)
    assert backoff.refused(now), "a new burst after a stored copy is logged again"


def test_attempts_per_second_stay_a_handful_while_refusals_go_on() -> None:
    backoff = RefusalBackoff()
    now, attempts = 0.0, 0
    while now < 60:
        backoff.refused(now)
        attempts += 1
        now = backoff.paused_until
    assert attempts / 60 < 1


class _Impl:
    def __init__(self) -> None:
        self.published: list[tuple[Any, ...]] = []
        self.on_confirm: Any = None
        self.on_return: Any = None

    def confirm_delivery(self, ack_nack_callback: Any) -> None:
        self.on_confirm = ack_nack_callback

    def add_on_return_callback(self, callback: Any) -> None:
        self.on_return = callback

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        self.published.append(args)


class _Connection:
    def __init__(self) -> None:
        self.impl = _Impl()
        self.wakes = 0

    def channel(self) -> Any:
        return SimpleNamespace(_impl=self.impl, is_open=True)

    def add_callback_threadsafe(self, _callback: Any) -> None:
        self.wakes += 1


def _frame(method: Any) -> Any:
    return SimpleNamespace(method=method)


@pytest.fixture
def copies() -> tuple[CopyChannel, _Connection]:
    connection = _Connection()
    return CopyChannel(connection), connection  # type: ignore[arg-type]


def _publish(channel: CopyChannel, token: str, message_id: str = "m") -> None:
    channel.publish(token, "x", "k", b"{}", pika.BasicProperties(message_id=message_id))


def test_a_copy_without_a_confirm_stays_in_flight(copies: tuple[CopyChannel, _Connection]) -> None:
    channel, _ = copies
    _publish(channel, "a")
    assert channel.in_flight == 1
    assert channel.take_results() == []  # the store raises CopyTimeout past its deadline
    assert channel.in_flight == 1


def test_acks_nacks_and_returns_reach_the_right_copies(
    copies: tuple[CopyChannel, _Connection],
) -> None:
    channel, connection = copies
    impl = connection.impl
    for token in ("a", "b", "c", "d"):
        _publish(channel, token, message_id=token)
    # "c" was unroutable: its return comes before the ack that covers it.
    impl.on_return(
        None,
        SimpleNamespace(exchange="x", routing_key="k"),
        pika.BasicProperties(message_id="c"),
        b"{}",
    )
    impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=3, multiple=True)))
    assert connection.wakes == 1, "the I/O loop is woken to act on the confirms"
    assert channel.take_results() == [
        ("a", Confirm.STORED),
        ("b", Confirm.STORED),
        ("c", Confirm.UNROUTABLE),
    ]
    impl.on_confirm(_frame(pika.spec.Basic.Nack(delivery_tag=4)))
    assert channel.take_results() == [("d", Confirm.REFUSED)]
    assert channel.in_flight == 0


def test_a_confirm_is_never_reported_twice(copies: tuple[CopyChannel, _Connection]) -> None:
    channel, connection = copies
    _publish(channel, "a")
    connection.impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=1)))
    connection.impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=1, multiple=True)))
    connection.impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=7)))
    assert channel.take_results() == [("a", Confirm.STORED)]
