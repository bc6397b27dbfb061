"""Which dead-letter queues the console may read by taking and giving back."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from domain_event_broker.core import rabbitmq
from domain_event_broker.core.rabbitmq import UNLIMITED_DELIVERIES, returns_wear_out


@pytest.mark.parametrize(
    ("row", "wears_out"),
    [
        (None, False),
        ({"type": "classic", "arguments": {}}, False),
        ({"type": "stream", "arguments": {}}, False),
        ({"type": "quorum", "arguments": {"x-delivery-limit": UNLIMITED_DELIVERIES}}, False),
        ({"type": "quorum", "arguments": {}}, True),  # 4.0-4.2: 20 by default
        ({"type": "quorum", "arguments": {"x-delivery-limit": 20}}, True),
        ({"type": "quorum", "effective_policy_definition": {"delivery-limit": 5}}, True),
        ({"type": "quorum", "effective_policy_definition": {"delivery-limit": -1}}, False),
        ({"type": "quorum", "arguments": {"x-delivery-limit": "nonsense"}}, True),
    ],
)
def test_a_quorum_queue_with_a_delivery_limit_is_not_read(
    row: dict[str, Any] | None, wears_out: bool
) -> None:
    assert returns_wear_out(row) is wears_out


def test_the_examples_in_the_module_run() -> None:
    assert doctest.testmod(rabbitmq).failed == 0
