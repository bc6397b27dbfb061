"""The event map: services from connections, who consumes which subscriber, rates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.event_map import (
    UNNAMED_SERVICE,
    ConnectionRecord,
    ConsumerRecord,
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
