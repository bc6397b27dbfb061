"""Ordered subscribers and the archive on the event map, from what the core declares."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.archive import archive_arguments, archive_name
from domain_event_broker.core.event_map import ConnectionRecord, ConsumerRecord, event_map
from domain_event_broker.core.inventory import BindingRecord, QueueRecord, subscribers
from domain_event_broker.core.operations import Bind, ExchangeBind, Operation, QueueDeclare
from domain_event_broker.core.ordered_inventory import (
    ExchangeBindingRecord,
    archive_of,
    ordered_subscribers,
)
from domain_event_broker.core.partitions import partitioned_subscriber, partitions_exchange_name
from domain_event_broker.core.topology import DEFAULT_EXCHANGE, SubscriberTopology


class Listed:
    """What the broker lists once ``operations`` are carried out; queue figures given."""

    def __init__(self, operations: list[Operation], figures: dict[str, tuple[int, int, int]]):
        self.queues = [
            QueueRecord(op.name, *figures.get(op.name, (0, 0, 0)))
            for op in operations
            if isinstance(op, QueueDeclare)
        ]
        self.bindings = [
            BindingRecord(op.exchange, op.queue, op.routing_key)
            for op in operations
            if isinstance(op, Bind)
        ]
        self.exchange_bindings = [
            ExchangeBindingRecord(op.source, op.destination, op.routing_key)
            for op in operations
            if isinstance(op, ExchangeBind)
        ]


figures = st.tuples(st.integers(0, 50), st.integers(0, 5), st.integers(0, 3))


@given(st.integers(1, 12), st.lists(figures, min_size=13, max_size=13), st.integers(0, 40))
def test_an_ordered_subscriber_is_one_subscriber_summed_over_its_partitions(
    partitions: int, partition_figures: list[tuple[int, int, int]], dead: int
) -> None:
    ledger = SubscriberTopology(
        "ledger", ("order.placed", "order.paid"), dead_letter=True, partitions=partitions
    )
    billing = SubscriberTopology("billing", ("order.placed",), dead_letter=True)
    given_figures = dict(zip(ledger.consumed_queues, partition_figures[:partitions], strict=True))
    listed = Listed(
        ledger.declarations() + billing.declarations(),
        {**given_figures, "ledger-dl": (dead, 0, 0)},
    )
    found = ordered_subscribers(listed.queues, listed.bindings, listed.exchange_bindings)
    assert [one.summary.name for one in found] == ["ledger"]
    ledger_found = found[0]
    assert [queue.name for queue in ledger_found.partitions] == list(ledger.consumed_queues)
    summary = ledger_found.summary
    assert summary.binding_keys == ("order.paid", "order.placed")
    kept = [given_figures[name] for name in ledger.consumed_queues]
    assert summary.waiting == sum(ready for ready, _, _ in kept)
    assert summary.unacked == sum(unacked for _, unacked, _ in kept)
    assert summary.consumers == sum(consumers for _, _, consumers in kept)
    assert summary.dead_letters == dead
    # The unordered inventory sees billing only: no partition passes for a subscriber.
    unordered = subscribers(listed.queues, listed.bindings)
    assert [one.name for one in unordered] == ["billing"]


def test_the_map_draws_an_ordered_subscriber_once_with_who_is_active_where() -> None:
    ledger = SubscriberTopology("ledger", ("order.*",), partitions=2)
    listed = Listed(ledger.declarations(), {"ledger-p000": (4, 1, 2), "ledger-p001": (1, 0, 2)})
    ordered = ordered_subscribers(listed.queues, listed.bindings, listed.exchange_bindings)
    connections = [
        ConnectionRecord("a", "ledger-east", "subscriber"),
        ConnectionRecord("b", "ledger-west", "subscriber"),
    ]
    consumers = [
        ConsumerRecord("ledger-p000", "a", active=False),
        ConsumerRecord("ledger-p000", "b", active=True),
        ConsumerRecord("ledger-p001", "a", active=True),
        ConsumerRecord("ledger-p001", "b", active=False),
    ]
    rates = {"ledger-p000": (2.0, 1.5), "ledger-p001": (1.0, 0.5)}
    drawn = event_map(DEFAULT_EXCHANGE, [], connections, consumers, rates, ordered=ordered)
    (shown,) = drawn.subscribers
    assert shown.summary.name == "ledger"
    assert shown.services == ("ledger-east", "ledger-west")
    assert (shown.rate_in, shown.rate_out) == (3.0, 2.0)
    assert [
        (p.queue, p.waiting, p.active_service, p.active_connection) for p in shown.partitions
    ] == [
        ("ledger-p000", 4, "ledger-west", "b"),
        ("ledger-p001", 1, "ledger-east", "a"),
    ]


def test_the_archive_is_found_by_its_name_with_its_retention() -> None:
    queues = [QueueRecord(archive_name(DEFAULT_EXCHANGE), 120, 0, 0), QueueRecord("x", 1, 0, 0)]
    arguments = {archive_name(DEFAULT_EXCHANGE): archive_arguments("30D", 20 * 10**9)}
    archive = archive_of(DEFAULT_EXCHANGE, queues, arguments)
    assert archive is not None
    assert (archive.name, archive.events, archive.max_age, archive.max_bytes) == (
        "domain-events-archive",
        120,
        "30D",
        20 * 10**9,
    )
    assert archive_of("other", queues, arguments) is None


@given(st.text(min_size=1, max_size=30))
def test_a_hash_exchange_name_reads_back_as_its_subscriber(subscriber: str) -> None:
    assert partitioned_subscriber(partitions_exchange_name(subscriber)) == subscriber


@given(st.text(max_size=30))
def test_other_exchange_names_name_no_subscriber(name: str) -> None:
    found = partitioned_subscriber(name)
    assert found is None or partitions_exchange_name(found) == name
    assert partitioned_subscriber("-partitions") is None
