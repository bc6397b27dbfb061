"""Retry and dead-letter copies keep the same properties on the sync and asyncio sides."""

from __future__ import annotations

import datetime

import aio_pika
import pika

from domain_event_broker.copies import COPIED_PROPERTIES, copy_properties

ALL = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "priority": 3,
    "correlation_id": "corr",
    "reply_to": "replies",
    "message_id": "id-1",
    "timestamp": 1_700_000_000,
    "type": "order.placed",
    "app_id": "shop",
}


def test_the_sync_copy_keeps_exactly_the_listed_properties() -> None:
    original = pika.BasicProperties(
        **ALL, user_id="guest", expiration="1000", delivery_mode=1, headers={"old": 1}
    )
    copy = copy_properties(original, {"new": 2})
    assert set(ALL) == set(COPIED_PROPERTIES)
    assert {name: getattr(copy, name) for name in COPIED_PROPERTIES} == ALL
    assert (copy.headers, copy.delivery_mode, copy.user_id, copy.expiration) == (
        {"new": 2},
        2,
        None,
        None,
    )


def test_every_listed_property_is_one_an_asyncio_message_takes() -> None:
    values = {**ALL, "timestamp": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)}
    message = aio_pika.Message(b"{}", **{name: values[name] for name in COPIED_PROPERTIES})
    assert message.message_id == "id-1" and message.app_id == "shop"
