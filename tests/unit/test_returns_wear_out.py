"""Which dead-letter queues the console may read by taking and giving back."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from domain_event_broker.core import rabbitmq
from domain_event_broker.core.rabbitmq import (
    UNKNOWN,
    UNLIMITED_DELIVERIES,
    RabbitMQVersion,
    returns_wear_out,
)

V3 = RabbitMQVersion(3, 10, 8)
QUORUM = "quorum"
LIMIT = "x-delivery-limit"
POLICY = "effective_policy_definition"
V4 = RabbitMQVersion(4, 0, 5)


@pytest.mark.parametrize(
    ("row", "on_3x", "on_4x", "unknown"),
    [
        (None, False, False, False),
        ({"type": "classic", "arguments": {}}, False, False, False),
        ({"type": "stream", "arguments": {}}, False, False, False),
        # 3.x reads -1 as "none allowed" (dropped after one return); 4.x as "for ever".
        (
            {"type": QUORUM, "arguments": {LIMIT: UNLIMITED_DELIVERIES}},
            True,
            False,
            True,
        ),
        ({"type": "quorum", "arguments": {}}, False, True, True),  # 4.0-4.2: 20 by default
        ({"type": "quorum", "arguments": {"x-delivery-limit": 20}}, True, True, True),
        (
            {"type": QUORUM, POLICY: {"delivery-limit": 5}},
            True,
            True,
            True,
        ),
        (
            {"type": QUORUM, POLICY: {"delivery-limit": -1}},
            True,
            False,
            True,
        ),
        ({"type": "quorum", "arguments": {"x-delivery-limit": "nonsense"}}, True, True, True),
    ],
)
def test_a_queue_whose_returns_count_against_a_limit_is_not_read(
    row: dict[str, Any] | None, on_3x: bool, on_4x: bool, unknown: bool
) -> None:
    assert returns_wear_out(row, V3) is on_3x
    assert returns_wear_out(row, V4) is on_4x
    assert returns_wear_out(row, UNKNOWN) is unknown


def test_the_examples_in_the_module_run() -> None:
    assert doctest.testmod(rabbitmq).failed == 0
