"""DomainEvent, its wire format, and the rules for routing and binding keys."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from domain_event_broker import (
    DomainEvent,
    EventNotSerializable,
    InvalidEvent,
    InvalidRoutingKey,
    settings,
)
from domain_event_broker.events import topic_matches, validate_binding_key, validate_routing_key
from domain_event_broker.settings import mask_url


def test_wire_format_has_exactly_the_fields_of_releases_2_and_3() -> None:
    event = DomainEvent("user.registered", {"user_id": 7}, domain_object_id="7")
    fields = json.loads(event.to_json())
    assert set(fields) == {"routing_key", "data", "domain_object_id", "uuid_string", "timestamp"}
    assert fields["routing_key"] == "user.registered"
    assert fields["data"] == {"user_id": 7}
    assert fields["domain_object_id"] == "7"
    assert isinstance(fields["timestamp"], float)
    assert abs(fields["timestamp"] - time.time()) < 5


def test_round_trip_and_equality_by_event_data() -> None:
    event = DomainEvent("order.shipped", {"order": [1, 2]}, uuid_string="abc", timestamp=1.5)
    again = DomainEvent.from_json(event.to_json().encode())
    assert again == event
    assert again.event_data == event.event_data
    assert again.retries == 0
    assert (
        DomainEvent("order.shipped", {"order": [1, 3]}, uuid_string="abc", timestamp=1.5) != event
    )


def test_from_json_accepts_a_body_written_by_the_old_library() -> None:
    body = (
        '{"routing_key": "user.registered", "data": {"id": 1}, "domain_object_id": null, '
        '"uuid_string": "5f1c", "timestamp": 1500000000.25}'
    )
    event = DomainEvent.from_json(body)
    assert (event.routing_key, event.data, event.uuid_string, event.timestamp) == (
        "user.registered",
        {"id": 1},
        "5f1c",
        1500000000.25,
    )


def test_from_json_keeps_unknown_fields_from_newer_writers_out_of_the_way() -> None:
    event = DomainEvent.from_json('{"routing_key": "a.b", "data": {}, "schema": 2}')
    assert event.routing_key == "a.b"
    assert "schema" not in event.event_data


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_a_body_that_is_not_an_event_raises_invalid_event(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        DomainEvent.from_json(body)


def test_each_event_gets_its_own_uuid() -> None:
    assert DomainEvent("a.b").uuid_string != DomainEvent("a.b").uuid_string


def test_unserialisable_data_names_the_offending_key() -> None:
    event = DomainEvent("user.registered", {"user": {"joined": datetime.date(2020, 1, 1)}})
    with pytest.raises(EventNotSerializable) as raised:
        event.to_json()
    assert "data['user']['joined']" in str(raised.value)
    assert isinstance(raised.value, TypeError)


def test_nan_is_not_json() -> None:
    with pytest.raises(EventNotSerializable, match=r"data\['ratio'\]"):
        DomainEvent("a.b", {"ratio": float("nan")}).to_json()


@pytest.mark.parametrize(
    "key",
    ["", "user..registered", ".user", "user.", "user.*", "#", "user.#", "a" * 256, 7, None],
)
def test_bad_routing_keys_are_refused(key: object) -> None:
    with pytest.raises(InvalidRoutingKey):
        validate_routing_key(key)


def test_a_routing_key_of_255_bytes_is_fine() -> None:
    assert validate_routing_key("a" * 255) == "a" * 255


@pytest.mark.parametrize("key", ["user.*", "#", "user.#", "*.registered", "a.b.c", "user"])
def test_valid_binding_keys(key: str) -> None:
    assert validate_binding_key(key) == key


@pytest.mark.parametrize("key", ["", "user.", "user*", "us#er.x", "a..b", "x" * 300])
def test_invalid_binding_keys(key: str) -> None:
    with pytest.raises(InvalidRoutingKey):
        validate_binding_key(key)


@pytest.mark.parametrize(
    ("binding", "routing", "matches"),
    [
        ("user.*", "user.registered", True),
        ("user.*", "user.registered.eu", False),
        ("user.#", "user", True),
        ("user.#", "user.registered.eu", True),
        ("#", "anything.at.all", True),
        ("*.registered", "user.registered", True),
        ("*.registered", "registered", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
    ],
)
def test_topic_matching_follows_rabbitmq(binding: str, routing: str, matches: bool) -> None:
    assert topic_matches(binding, routing) is matches


def test_url_password_is_masked() -> None:
    assert mask_url("amqp://app:s3cret@rabbit:5672/%2F") == "amqp://app:***@rabbit:5672/%2F"
    assert mask_url("amqps://app:p%40ss@rabbit/vh") == "amqps://app:***@rabbit/vh"
    assert mask_url("amqp://rabbit/") == "amqp://rabbit/"


def test_the_old_import_paths_still_work() -> None:
    from domain_event_broker import Publisher, Retry, Subscriber, publish_domain_event, transport
    from domain_event_broker.replay import retry_event

    assert transport.Publisher is Publisher and transport.Subscriber is Subscriber
    assert transport.Retry is Retry and transport.publish_domain_event is publish_domain_event
    assert retry_event(body=b"{}") == "retry"
    assert settings.DEFAULT is not None and settings.BROKER.startswith("amqp://")
