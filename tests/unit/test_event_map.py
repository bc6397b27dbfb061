"""The event map: services from connections, who consumes which subscriber, rates."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core import event_map as event_map_module
from domain_event_broker.core.event_map import (
    UNNAMED_SERVICE,
    ConnectionRecord,
    ConsumerRecord,
    KeyTally,
    event_map,
)
from domain_event_broker.core.inventory import SubscriberSummary


def summary(name: str, *keys: str) -> SubscriberSummary:
    return SubscriberSummary(name, keys, 1, 0, 0, 0, 0)


def test_publishing_services_and_who_consumes_which_subscriber() -> None:
    connections = [
        ConnectionRecord("c1", "shop", "publisher", "domain-event-broker"),
        ConnectionRecord("c2", "warehouse", "asyncio publisher", "domain-event-broker"),
        ConnectionRecord("c3", "billing", "subscriber", "domain-event-broker"),
        ConnectionRecord("c4", "shop", "subscriber", "domain-event-broker"),
        ConnectionRecord("c5", "", "", "pika"),
    ]
    consumers = [
        ConsumerRecord("billing", "c3"),
        ConsumerRecord("billing", "c3"),
        ConsumerRecord("mailer", "c4"),
        ConsumerRecord("mailer", "c5"),
        ConsumerRecord("stock", "gone-since"),
    ]
    drawn = event_map(
        "domain-events",
        [summary("stock", "stock.#"), summary("billing", "order.*"), summary("mailer", "#")],
        connections,
        consumers,
        {"billing": (2.5, 2.0)},
    )
    assert drawn.exchange == "domain-events"
    assert drawn.publishers == ("shop", "warehouse")
    assert [(s.summary.name, s.services) for s in drawn.subscribers] == [
        ("billing", ("billing",)),
        ("mailer", (UNNAMED_SERVICE, "shop")),
        ("stock", (UNNAMED_SERVICE,)),
    ]
    assert [(s.rate_in, s.rate_out) for s in drawn.subscribers] == [
        (2.5, 2.0),
        (0.0, 0.0),
        (0.0, 0.0),
    ]


names = st.text(alphabet="abcdef", min_size=1, max_size=4)


@given(
    st.lists(st.tuples(names, names, st.sampled_from(["publisher", "subscriber", ""])), max_size=20)
)
def test_every_publishing_service_once_in_order(rows: list[tuple[str, str, str]]) -> None:
    connections = [
        ConnectionRecord(f"c{i}", service, role) for i, (service, _, role) in enumerate(rows)
    ]
    drawn = event_map("x", [], connections, [], {})
    expected = sorted({service for service, _, role in rows if role == "publisher"})
    assert list(drawn.publishers) == expected


def test_keys_seen_reach_the_subscribers_whose_bindings_match() -> None:
    drawn = event_map(
        "domain-events",
        [
            summary("billing", "order.placed", "order.paid"),
            summary("mailer", "order.*"),
            summary("stock", "stock.#"),
            summary("amq.gen-Xy12", "#"),  # a temporary queue (the console's own, listen's)
        ],
        [],
        [],
        {},
        [("invoice.sent", 3, 9.0), ("order.placed", 2, 8.0), ("stock.moved.north", 1, 7.0)],
    )
    assert [s.summary.name for s in drawn.subscribers] == ["billing", "mailer", "stock"]
    assert [(seen.routing_key, seen.subscribers) for seen in drawn.routing_keys] == [
        ("invoice.sent", ()),
        ("order.placed", ("billing", "mailer")),
        ("stock.moved.north", ("stock",)),
    ]


@given(
    st.lists(
        st.tuples(st.sampled_from(["a.b", "a.c", "d"]), st.floats(0, 1000)),
        max_size=50,
    ).map(lambda seen: sorted(seen, key=lambda item: item[1]))
)
def test_a_tally_counts_the_keys_seen_within_its_window(seen: list[tuple[str, float]]) -> None:
    tally = KeyTally(window=100.0)
    for key, when in seen:
        tally.add(key, when)
    now = seen[-1][1] if seen else 0.0
    recent = tally.recent(now)
    for key, count, last in recent:
        times = [when for seen_key, when in seen if seen_key == key]
        assert last == max(times)
        assert now - last <= 100.0
        assert 1 <= count <= len(times)
    assert [count for _, count, _ in recent] == sorted((c for _, c, _ in recent), reverse=True)
    assert {key for key, _, _ in recent} == {key for key, when in seen if now - when <= 100.0}


def test_a_tally_forgets_the_least_recently_seen_keys_past_its_limit() -> None:
    tally = KeyTally(window=100.0, limit=2)
    for number, key in enumerate(["a", "b", "a", "c"]):
        tally.add(key, float(number))
    assert tally.recent(3.0) == [("a", 2, 2.0), ("c", 1, 3.0)]


def test_the_examples_in_the_module_run() -> None:
    assert doctest.testmod(event_map_module).failed == 0


@given(
    st.lists(
        st.tuples(names, st.sampled_from(["publisher", "subscriber"]), st.floats(0, 1000)),
        max_size=20,
    )
)
def test_a_service_publishes_as_fast_as_its_publishing_connections_together(
    rows: list[tuple[str, str, float]],
) -> None:
    connections = [
        ConnectionRecord(f"c{i}", service, role) for i, (service, role, _) in enumerate(rows)
    ]
    rates = {f"c{i}": rate for i, (_, _, rate) in enumerate(rows)}
    drawn = event_map("x", [], connections, [], {}, publish_rates=rates)
    assert set(drawn.publish_rates) == set(drawn.publishers)
    for service in drawn.publishers:
        expected = sum(rate for s, role, rate in rows if s == service and role == "publisher")
        assert abs(drawn.publish_rates[service] - expected) <= 1e-6 * max(1.0, expected)
