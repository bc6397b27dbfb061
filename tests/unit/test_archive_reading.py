"""Reading the archive fast without giving anything up: its acks, its key matching, its timestamps.

A small model of a stream consumer checks the acks as RabbitMQ would (a
``multiple`` ack names a delivered tag above the last one acked) and that the
read never stalls: RabbitMQ stops at the prefetch, so whenever it has stopped
and every delivery is done, an ack is due. The shortcuts of the matching and
of the timestamp are held to the slow, plain answers.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from domain_event_broker.core.acks import StreamAcks
from domain_event_broker.core.archive import BindingMatcher, matches, timestamp_of
from domain_event_broker.events import DomainEvent

WORDS = st.sampled_from(["order", "user", "placed", "paid", "eu", "a"])


@settings(max_examples=300)
@given(st.integers(1, 12), st.integers(1, 60), st.data())
def test_the_stream_acks_never_stall_and_name_only_outstanding_tags(
    prefetch: int, messages: int, data: st.DataObject
) -> None:
    acks = StreamAcks(prefetch, data.draw(st.integers(1, prefetch)))
    delivered = acked = 0
    in_flight: list[int] = []  # being handled, finished in any order (several workers)
    while delivered < messages or in_flight:
        can_deliver = delivered < messages and delivered - acked < prefetch
        # Stalled: RabbitMQ waits for credit and nothing is being handled. Never so.
        assert can_deliver or in_flight, f"stalled at {delivered} delivered, {acked} acked"
        if can_deliver and (not in_flight or data.draw(st.booleans())):
            delivered += 1
            acks.delivered(delivered)
            in_flight.append(delivered)
        else:
            acks.done(in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1))))
        tag = acks.take()
        if tag is not None:
            assert acked < tag <= delivered, "an ack of a tag not outstanding: a channel error"
            acked = tag
    assert delivered == messages


@given(st.integers(1, 20_000))
def test_the_archives_credit_is_topped_up_a_quarter_at_a_time(prefetch: int) -> None:
    acks = StreamAcks.for_prefetch(prefetch)
    assert acks.prefetch == prefetch
    assert acks.batch == max(1, prefetch // 4)


@given(st.lists(st.lists(WORDS | st.sampled_from(["*", "#"]), min_size=1, max_size=4)), st.data())
def test_the_binding_matcher_answers_as_the_plain_match(
    patterns: list[list[str]], data: st.DataObject
) -> None:
    binding_keys = [".".join(words) for words in patterns]
    matcher = BindingMatcher(binding_keys)
    for _ in range(5):
        routing_key = ".".join(data.draw(st.lists(WORDS, min_size=1, max_size=4)))
        assert matcher(routing_key) == matches(binding_keys, routing_key)
        assert matcher(routing_key) == matches(binding_keys, routing_key)  # kept, still right


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["timestamp", "t", 'x"timestamp']), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    JSON_VALUES,
    st.floats(0, 4e9) | st.integers(0, 4_000_000_000) | st.none(),
)
def test_the_timestamp_without_a_parse_is_the_parsed_one(data: object, timestamp: object) -> None:
    fields = {
        "routing_key": "order.placed",
        "data": data,
        "domain_object_id": None,
        "uuid_string": "u",
        "timestamp": timestamp,
    }
    body = json.dumps(fields).encode()
    read = timestamp_of(body)
    if timestamp is None:
        assert read is None  # left to the parse, which gives it one
    else:
        assert read == DomainEvent.from_json(body).timestamp


@given(JSON_VALUES, st.text(max_size=30))
def test_the_timestamp_shortcut_never_reads_another_key(data: object, tail: str) -> None:
    """Whatever a body holds, the shortcut answers None or what a parse finds at the top."""
    for body in (
        json.dumps({"data": data, "timestamp": 5}).encode(),
        json.dumps({"data": data}).encode(),
        (json.dumps({"data": data})[:-1] + tail).encode(),
    ):
        read = timestamp_of(body)
        if read is None:
            continue
        try:
            parsed = json.loads(body)
        except ValueError:
            continue  # not JSON: not an event either way (the worker dead-letters it)
        assert isinstance(parsed, dict) and parsed.get("timestamp") == read
