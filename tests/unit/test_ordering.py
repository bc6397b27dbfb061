"""The pure decisions of ordered handling: the object line, the object id, the partitions."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.operations import Bind, ExchangeBind, ExchangeDeclare, QueueDeclare
from domain_event_broker.core.ordering import ObjectLine, object_id_of, object_key, with_object_id
from domain_event_broker.core.partitions import (
    ordered_partitions,
    partition_index,
    partition_mismatch,
    partition_probe,
    plugin_missing,
)
from domain_event_broker.core.rabbitmq import RabbitMQVersion
from domain_event_broker.core.topology import OBJECT_ID_HEADER, SubscriberTopology
from domain_event_broker.events import DomainEvent

# A run: events arriving (object or None) and "done" steps settling one started event.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.one_of(st.none(), st.sampled_from("abcd"))),
        st.tuples(st.just("done"), st.integers(min_value=0, max_value=50)),
    ),
    max_size=80,
)


@given(steps)
def test_the_line_starts_each_object_in_arrival_order_one_at_a_time(run: list[tuple]) -> None:
    line: ObjectLine[int] = ObjectLine()
    arrived: dict[object, list[int]] = defaultdict(list)
    started: dict[object, list[int]] = defaultdict(list)
    in_flight: list[tuple[object, int]] = []
    key_of: dict[int, object] = {}

    def start(item: int | None) -> None:
        if item is not None:
            key = key_of[item]
            assert key is None or all(k != key for k, _ in in_flight), "two of one object at once"
            started[key].append(item)
            in_flight.append((key, item))

    for number, (step, value) in enumerate(run):
        if step == "arrive":
            key_of[number] = value
            arrived[value].append(number)
            start(line.arrive(value, number))
        elif in_flight:
            key, _ = in_flight.pop(value % len(in_flight))
            start(line.done(key))
    while in_flight:  # settle the rest: everything that arrived starts
        key, _ = in_flight.pop(0)
        start(line.done(key))
    for key, numbers in arrived.items():
        if key is not None:
            assert started[key] == numbers  # publish order per object, none lost
    assert sorted(started[None]) == arrived[None]
    assert line.objects == 0 and line.waiting == 0


@given(st.lists(st.sampled_from("ab"), min_size=1, max_size=20))
def test_a_withdrawn_object_gives_back_what_waits_behind_it_in_order(keys: list[str]) -> None:
    line: ObjectLine[int] = ObjectLine()
    started = [n for n, key in enumerate(keys) if line.arrive(key, n) is not None]
    first = started[0]
    behind = line.withdraw(keys[first])
    assert behind == [n for n, key in enumerate(keys) if key == keys[first] and n != first]
    assert line.arrive(keys[first], 99) == 99  # the object starts afresh when it comes back
    assert sorted(line.clear()) == [n for n, key in enumerate(keys) if key != keys[first]][1:]


@given(st.one_of(st.integers(), st.text(max_size=20), st.uuids().map(str)))
def test_the_header_holds_the_id_as_text_so_42_and_the_string_42_are_one_object(
    object_id: object,
) -> None:
    body = DomainEvent("order.paid", {"domain_object_id": "not this one"}, object_id).to_json()
    headers = with_object_id({"traceparent": "t"}, body.encode())
    assert headers == {"traceparent": "t", OBJECT_ID_HEADER: str(object_id)}
    assert object_key(None, body.encode()) == str(object_id)  # a 3.x publisher: from the body
    assert object_key({OBJECT_ID_HEADER: str(object_id).encode()}, b"{}") == str(object_id)


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", DomainEvent("order.paid", {}).to_json().encode(), b"{}"]
)
def test_no_id_means_no_header(body: bytes) -> None:
    assert object_id_of(body) is None
    assert with_object_id(None, body) is None


def test_an_ordered_topology_declares_hash_exchange_partitions_and_dead_letters() -> None:
    topology = SubscriberTopology(
        "shipping", ("order.*", "invoice.paid"), dead_letter=True, partitions=3
    )
    operations = topology.declarations()
    hash_exchange = ExchangeDeclare(
        "shipping-partitions",
        "x-consistent-hash",
        True,
        arguments={"hash-header": OBJECT_ID_HEADER},
    )
    assert hash_exchange in operations
    assert ExchangeBind("shipping-partitions", "domain-events", "order.*") in operations
    assert ExchangeBind("shipping-partitions", "domain-events", "invoice.paid") in operations
    queues = [op for op in operations if isinstance(op, QueueDeclare)]
    # The last partition first: N-p000 exists only once every partition does.
    assert [queue.name for queue in queues] == ["shipping-dl", *reversed(topology.consumed_queues)]
    assert topology.consumed_queues == ("shipping-p000", "shipping-p001", "shipping-p002")
    for queue in queues[1:]:
        assert queue.arguments == {
            "x-dead-letter-exchange": "shipping-dlx",
            "x-single-active-consumer": True,
        }
        assert Bind(queue.name, "shipping-partitions", "1") in operations
    # N-retry only routes replayed dead letters to the partitions: no wait queues.
    assert ExchangeBind("shipping-partitions", "shipping-retry", "order.*") in operations
    assert not any("-wait-" in getattr(op, "name", "") for op in operations)
    assert not any(getattr(op, "queue", "") == "shipping" for op in operations)


def test_quorum_partitions_keep_every_event_on_rabbitmq_4() -> None:
    topology = SubscriberTopology("shipping", ("order.*",), queue_type="quorum", partitions=2)
    queues = [
        op for op in topology.declarations(RabbitMQVersion(4, 0, 5)) if isinstance(op, QueueDeclare)
    ]
    assert all(queue.arguments and queue.arguments["x-delivery-limit"] == -1 for queue in queues)
    assert all(queue.arguments and queue.arguments["x-single-active-consumer"] for queue in queues)


def test_an_unordered_topology_is_unchanged() -> None:
    topology = SubscriberTopology("mailer", ("user.*",))
    assert topology.consumed_queues == ("mailer",)
    assert not any(isinstance(op, ExchangeBind) for op in topology.declarations())


@given(st.integers(min_value=1, max_value=256))
def test_partition_names_and_numbers_agree(partitions: int) -> None:
    names = SubscriberTopology("s", ("k",), partitions=partitions).consumed_queues
    assert [partition_index("s", name) for name in names] == list(range(partitions))
    assert partition_index("s", "s-dl") is None and partition_index("s", "s-p1") is None


@given(st.integers(min_value=1, max_value=256), st.integers(min_value=0, max_value=256))
def test_a_mismatch_names_both_counts_and_the_migration(declared: int, live: int) -> None:
    words = partition_mismatch("shipping", declared, live)
    if live in (0, declared):
        assert words is None
    else:
        assert words is not None
        assert f"partitions={declared}" in words and f"has {live} partitions" in words
        assert "delete 'shipping-partitions'" in words


def test_the_plugin_error_names_the_command() -> None:
    words = plugin_missing("shipping", "COMMAND_INVALID - invalid exchange type")
    assert "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange" in words


@pytest.mark.parametrize(
    ("ordered_by", "partitions", "options", "error"),
    [
        ("domain_object_id", None, {}, "needs partitions"),
        ("domain_object_id", 0, {}, "from 1 to 256"),
        ("domain_object_id", 257, {}, "from 1 to 256"),
        ("domain_object_id", True, {}, "needs partitions"),
        ("uuid_string", 4, {}, "accepts only"),
        (None, 4, {}, "only with ordered_by"),
        ("domain_object_id", 4, {"exclusive": True}, "exclusive"),
        ("domain_object_id", 4, {"auto_delete": True}, "auto_delete"),
        ("domain_object_id", 4, {"durable": False}, "durable=False"),
    ],
)
def test_what_cannot_be_ordered_is_refused(
    ordered_by: str | None, partitions: object, options: dict[str, bool], error: str
) -> None:
    settings = {"exclusive": False, "auto_delete": False, "durable": True, **options}
    with pytest.raises(ValueError, match=error):
        ordered_partitions(ordered_by, partitions, **settings)  # type: ignore[arg-type]


def test_json_of_the_header_is_the_wire_form() -> None:
    body = json.dumps({"routing_key": "a", "data": {}, "domain_object_id": 7}).encode()
    assert object_id_of(body) == "7"


def probe(declared: int, existing: set[int]) -> int:
    present: dict[int, bool] = {}
    while (step := partition_probe(declared, present))[0] is not None:
        index = step[0]
        assert index not in present
        present[index] = index in existing
    assert len(present) <= 260
    return step[1]


@given(st.integers(min_value=1, max_value=256), st.integers(min_value=0, max_value=256))
def test_the_probe_finds_a_complete_live_count(declared: int, live: int) -> None:
    assert probe(declared, set(range(live))) == live


@given(st.integers(min_value=1, max_value=256), st.data())
def test_a_declaration_of_the_same_count_in_progress_is_no_mismatch(
    declared: int, data: st.DataObject
) -> None:
    # Partitions are declared last first: one in progress holds the top ones.
    first = data.draw(st.integers(min_value=0, max_value=declared - 1))
    assert partition_mismatch("s", declared, probe(declared, set(range(first, declared)))) is None


@given(
    data=st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text())),
    object_id=st.one_of(st.none(), st.integers(), st.text(max_size=8)),
    nested=st.one_of(st.none(), st.integers(), st.text(max_size=8)),
)
def test_the_object_id_of_a_body_is_what_parsing_it_gives(
    data: dict[str, object], object_id: object, nested: object
) -> None:
    """The shortcut for bodies without an id never answers otherwise than a full parse."""
    for payload in (data, {**data, "domain_object_id": nested}):
        event = DomainEvent("order.placed", payload, domain_object_id=object_id)
        body = event.to_json().encode("utf-8")
        expected = None if object_id is None else str(object_id)
        assert object_id_of(body) == expected
