"""The 3.x transport surface without a broker: ``requires_broker`` and inert attributes."""

from __future__ import annotations

import logging

import pytest

from domain_event_broker import settings
from domain_event_broker.transport import Transport, requires_broker


class Recorder(Transport):
    calls: list[tuple[object, ...]]

    @requires_broker
    def send(self, *args: object, **kwargs: object) -> str:
        """Send something."""
        self.calls.append((*args, *kwargs.values()))
        return "sent"


def test_without_a_broker_a_decorated_method_is_a_logged_no_op(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(connection_settings=None)
    recorder.calls = []
    with caplog.at_level(logging.DEBUG, logger="domain_event_broker.transport"):
        assert recorder.send(1, two=2) is None
    assert recorder.calls == []
    assert caplog.messages == ["No broker configured: Recorder.send() is deactivated."]


def test_with_a_broker_the_method_runs_and_keeps_its_name() -> None:
    recorder = Recorder("amqp://guest:guest@127.0.0.1:1/%2F")  # never connected
    recorder.calls = []
    assert recorder.send(1, two=2) == "sent"
    assert recorder.calls == [(1, 2)]
    assert Recorder.send.__name__ == "send" and Recorder.send.__doc__ == "Send something."


def test_without_a_broker_connection_and_channel_are_none() -> None:
    transport = Transport(None)
    assert transport.connect() is None
    assert transport.connection is None and transport.channel is None
    transport.disconnect()


def test_the_default_broker_and_exchange_are_3x_defaults() -> None:
    transport = Transport()
    assert transport.connection_settings == settings.BROKER
    assert (transport.exchange, transport.exchange_type) == ("domain-events", "topic")
