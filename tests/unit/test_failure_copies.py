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

from domain_event_broker.subscriber.confirms import Confirm, CopyChannel
from domain_event_broker.subscriber.failures import RefusalBackoff


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


def test_a_copy_without_a_confirm_stays_in_flight(copies: tuple[CopyChannel, _Connection]) -> None:
    channel, _ = copies
    channel.publish("x", "k", b"{}", pika.BasicProperties())
    assert channel.busy
    assert channel.take_result() is None  # the store raises CopyTimeout past its deadline
    assert channel.busy


def test_ack_nack_and_return_of_the_copy_in_flight(copies: tuple[CopyChannel, _Connection]) -> None:
    channel, connection = copies
    impl = connection.impl
    channel.publish("x", "k", b"{}", pika.BasicProperties())
    impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=1)))
    assert connection.wakes == 1, "the I/O loop is woken to act on the confirm"
    assert channel.take_result() is Confirm.STORED
    assert not channel.busy
    channel.publish("x", "k", b"{}", pika.BasicProperties())
    impl.on_confirm(_frame(pika.spec.Basic.Nack(delivery_tag=2)))
    assert channel.take_result() is Confirm.REFUSED
    channel.publish("x", "k", b"{}", pika.BasicProperties())
    impl.on_return()
    impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=3)))
    assert channel.take_result() is Confirm.UNROUTABLE


def test_a_late_confirm_of_an_abandoned_copy_is_ignored(
    copies: tuple[CopyChannel, _Connection],
) -> None:
    channel, connection = copies
    channel.publish("x", "k", b"{}", pika.BasicProperties())
    connection.impl.on_confirm(_frame(pika.spec.Basic.Ack(delivery_tag=7)))
    assert channel.take_result() is None
