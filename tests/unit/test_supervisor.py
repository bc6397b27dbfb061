"""The reconnect supervisor: node rotation, jittered backoff, the stable-connection rule, logs."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core import supervisor as supervisor_module
from domain_event_broker.core.supervisor import (
    Backoff,
    OutageLog,
    Supervisor,
    connection_supervisor,
)

LOGGER = "test.supervisor"
URL = "amqp://u:***@h/%2F"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ceiling(attempt: int, initial: float = 0.1, maximum: float = 3.0) -> float:
    return min(maximum, initial * 2.0**attempt)


def within_window(pause: float, attempt: int) -> bool:
    top = ceiling(attempt)
    return top / 2 <= pause <= top


def supervised(
    clock: Clock, *, nodes: int = 1, stable_after: float = 10.0, interval: float = 60.0
) -> Supervisor:
    outage = OutageLog(
        logging.getLogger(LOGGER),
        "the relay",
        backoff=Backoff(initial=0.1, maximum=3.0),
        interval=interval,
        clock=clock,
    )
    return Supervisor(outage, nodes=nodes, stable_after=stable_after, clock=clock)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# Nodes ------------------------------------------------------------------------


@given(nodes=st.integers(1, 8), losses=st.integers(0, 40))
def test_each_loss_moves_on_to_the_next_node_round_robin(nodes: int, losses: int) -> None:
    supervisor = supervised(Clock(), nodes=nodes)
    assert supervisor.node == 0
    seen = []
    for _ in range(losses):
        supervisor.lost(ConnectionError("refused"))
        seen.append(supervisor.node)
    assert seen == [(i + 1) % nodes for i in range(losses)]


def test_a_success_does_not_move_off_the_node_that_worked() -> None:
    clock = Clock()
    supervisor = supervised(clock, nodes=3)
    supervisor.lost(ConnectionError("refused"))
    supervisor.connected()
    assert supervisor.node == 1
    supervisor.lost(ConnectionError("refused"))
    assert supervisor.node == 2


@pytest.mark.parametrize("nodes", [0, -1])
def test_a_broker_without_nodes_is_refused(nodes: int) -> None:
    outage = OutageLog(logging.getLogger(LOGGER), "x")
    with pytest.raises(ValueError, match="at least one node"):
        Supervisor(outage, nodes=nodes)


# Backoff ----------------------------------------------------------------------


@given(losses=st.integers(1, 12))
def test_pauses_lie_in_the_jitter_window_of_their_attempt(losses: int) -> None:
    supervisor = supervised(Clock())
    for attempt in range(losses):
        pause = supervisor.lost(ConnectionError("refused"))
        assert within_window(pause, attempt), (attempt, pause)
        assert supervisor.outage.backoff.attempt == attempt + 1


def test_the_ceiling_doubles_up_to_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    # The top of each jitter window: 0.1 s doubling, capped at 3 s.
    monkeypatch.setattr(supervisor_module.random, "uniform", lambda low, high: high)
    supervisor = supervised(Clock())
    pauses = [supervisor.lost(ConnectionError("refused")) for _ in range(8)]
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0])


def test_the_floor_of_each_window_is_half_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module.random, "uniform", lambda low, high: low)
    supervisor = supervised(Clock())
    pauses = [supervisor.lost(ConnectionError("refused")) for _ in range(7)]
    assert pauses == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 1.5])


def test_a_connection_lost_before_it_was_stable_keeps_the_backoff_growing() -> None:
    clock = Clock()
    supervisor = supervised(clock, stable_after=10.0)
    for _ in range(3):
        supervisor.lost(ConnectionError("refused"))
        clock.now += 1
    supervisor.connected()
    assert supervisor.outage.backoff.attempt == 3, "a connection is no reason to restart yet"
    clock.now += 9.9
    pause = supervisor.lost(ConnectionError("PRECONDITION_FAILED"))
    assert within_window(pause, 3), pause
    assert supervisor.outage.backoff.attempt == 4


@pytest.mark.parametrize("lasted", [10.0, 10.5, 3600.0])
def test_a_connection_that_lasted_restarts_the_backoff(lasted: float) -> None:
    clock = Clock()
    supervisor = supervised(clock, stable_after=10.0)
    for _ in range(5):
        supervisor.lost(ConnectionError("refused"))
    supervisor.connected()
    clock.now += lasted
    pause = supervisor.lost(ConnectionError("connection reset"))
    assert within_window(pause, 0), pause
    assert supervisor.outage.backoff.attempt == 1


def test_stable_after_zero_restarts_the_backoff_on_every_success() -> None:
    clock = Clock()
    supervisor = supervised(clock, stable_after=0)
    for _ in range(4):
        supervisor.lost(ConnectionError("refused"))
    assert supervisor.outage.backoff.attempt == 4
    supervisor.connected()
    assert supervisor.outage.backoff.attempt == 0, "restarted at once, before any time passed"
    pause = supervisor.lost(ConnectionError("refused"))
    assert within_window(pause, 0), pause


def test_losses_that_never_connected_keep_growing_however_long_apart() -> None:
    clock = Clock()
    supervisor = supervised(clock, stable_after=10.0)
    for attempt in range(4):
        pause = supervisor.lost(ConnectionError("refused"))
        assert within_window(pause, attempt), (attempt, pause)
        clock.now += 100  # no connected() in between: nothing lasted


def test_pause_is_a_backoff_delay_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    supervisor = supervised(Clock(), nodes=3)
    pauses = [supervisor.pause() for _ in range(3)]
    assert [within_window(pause, attempt) for attempt, pause in enumerate(pauses)] == [True] * 3
    assert supervisor.outage.backoff.attempt == 3
    assert caplog.records == []
    assert supervisor.node == 0, "a pause is no loss: the node stays"
    assert not supervisor.failing


# Log --------------------------------------------------------------------------


def test_an_outage_is_one_warning_then_quiet_then_one_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    clock = Clock()
    supervisor = supervised(clock)
    supervisor.lost(ConnectionError("refused"))
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith("the relay failed: refused; retrying with backoff (next in ")
    for _ in range(20):  # 40 s of failures, inside the 60 s interval
        clock.now += 2
        supervisor.lost(ConnectionError("refused"))
    assert len(messages(caplog, logging.WARNING)) == 1
    assert len(messages(caplog, logging.DEBUG)) == 20
    assert supervisor.failing
    supervisor.connected()
    assert messages(caplog, logging.INFO) == [
        "the relay working again after 21 failed attempts in 40 s"
    ]
    assert not supervisor.failing
    assert len(messages(caplog, logging.WARNING)) == 1


def test_a_long_outage_warns_again_once_the_interval_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    clock = Clock()
    supervisor = supervised(clock, interval=60.0)
    supervisor.lost(ConnectionError("refused"))
    clock.now += 59.9
    supervisor.lost(ConnectionError("refused"))
    assert len(caplog.records) == 1
    clock.now += 0.1
    supervisor.lost(ConnectionError("refused"))
    assert len(caplog.records) == 2
    assert "still failing after 60 s: 2 failed attempts since the last warning" in (
        caplog.records[1].getMessage()
    )


def test_a_connection_without_an_outage_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    supervisor = supervised(Clock())
    supervisor.connected()
    assert caplog.records == []


def test_the_connection_supervisor_names_the_masked_url_and_warns_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    clock = Clock()
    supervisor = connection_supervisor(
        logging.getLogger(LOGGER), URL, then="consuming x again", nodes=2
    )
    supervisor.clock = clock
    supervisor.outage.clock = clock
    assert supervisor.nodes == 2
    for _ in range(3):
        supervisor.lost(ConnectionError("refused"))
        clock.now += 4
    assert messages(caplog, logging.WARNING) == [
        f"lost the connection to RabbitMQ at {URL} (ConnectionError: refused); "
        "reconnecting with backoff"
    ]
    assert len(messages(caplog, logging.DEBUG)) == 2
    assert all(URL in line for line in messages(caplog, logging.DEBUG))
    supervisor.connected()
    assert messages(caplog, logging.WARNING)[1:] == [
        f"reconnected to RabbitMQ at {URL} after 12.0 s; consuming x again"
    ]
    assert messages(caplog, logging.INFO) == []


def test_the_connection_supervisor_backs_off_with_the_default_backoff() -> None:
    supervisor = connection_supervisor(logging.getLogger(LOGGER), URL)
    backoff = supervisor.outage.backoff
    assert (backoff.initial, backoff.maximum, backoff.factor) == (0.1, 3.0, 2.0)
    assert supervisor.stable_after == 10.0
    assert within_window(supervisor.lost(ConnectionError("refused")), 0)


def test_the_connection_supervisor_can_name_the_error_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    supervisor = connection_supervisor(
        logging.getLogger(LOGGER), URL, client="asyncio subscriber", error_text=False
    )
    supervisor.lost(OSError("cannot connect to amqp://u:s3cret@h/"))
    assert messages(caplog, logging.WARNING) == [
        f"asyncio subscriber lost RabbitMQ at {URL} (OSError); reconnecting with backoff"
    ]
