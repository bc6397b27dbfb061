"""Which subscribers a broker's listing holds, and what is each one's (no broker)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.inventory import (
    BindingRecord,
    QueueRecord,
    belonging_to,
    subscribers,
)

QUEUES = [
    QueueRecord("mailer", ready=3, unacked=1, consumers=2),
    QueueRecord("mailer-dl", ready=4, unacked=0, consumers=0),
    QueueRecord("mailer-wait-1000", ready=5, unacked=0, consumers=0),
    QueueRecord("mailer-delay-250", ready=1, unacked=0, consumers=0),  # a 3.x instance's
    QueueRecord("mailer-wait-x", ready=9, unacked=0, consumers=0),  # not a wait queue name
    QueueRecord("printer", ready=0, unacked=0, consumers=0),
    QueueRecord("amq.gen-Xy", ready=0, unacked=0, consumers=1),  # a listener's temporary queue
    QueueRecord("unbound", ready=7, unacked=0, consumers=0),
]
BINDINGS = [
    BindingRecord("domain-events", "mailer", "user.registered"),
    BindingRecord("domain-events", "mailer", "user.*"),
    BindingRecord("mailer-retry", "mailer", "user.*"),
    BindingRecord("mailer-dlx", "mailer-dl", "user.*"),
    BindingRecord("domain-events", "printer", "#"),
    BindingRecord("other-exchange", "unbound", "#"),
    BindingRecord("domain-events", "gone", "#"),  # listed while the queue went
]


def test_a_subscriber_is_a_queue_bound_to_the_events_exchange() -> None:
    found = {summary.name: summary for summary in subscribers(QUEUES, BINDINGS)}
    assert sorted(found) == ["mailer", "printer"]
    mailer = found["mailer"]
    assert mailer.binding_keys == ("user.*", "user.registered")
    assert (mailer.consumers, mailer.waiting, mailer.unacked) == (2, 3, 1)
    assert mailer.dead_letters == 4
    assert mailer.retries_waiting == 6  # its wait queues, ours and 3.x's
    assert found["printer"].dead_letters is None


def test_what_belongs_to_a_subscriber_and_the_events_lost_with_it() -> None:
    exchanges = ["domain-events", "mailer-dlx", "mailer-retry", "mailer-delay-250", "printer-retry"]
    mine = belonging_to("mailer", QUEUES, exchanges)
    assert mine.queues == ("mailer", "mailer-delay-250", "mailer-dl", "mailer-wait-1000")
    assert mine.exchanges == ("mailer-delay-250", "mailer-dlx", "mailer-retry")
    assert mine.events == 3 + 1 + 4 + 5 + 1
    assert "domain-events" not in mine.exchanges  # shared by every subscriber


names = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)


@given(name=names, other=names)
def test_another_subscriber_s_queues_never_belong_to_this_one(name: str, other: str) -> None:
    # Unless its name is one of this one's own (N-dl, N-wait-<ms>): then it is.
    queues = [QueueRecord(other, 1, 0, 0), QueueRecord(f"{other}-dl", 1, 0, 0)]
    mine = belonging_to(name, queues, [f"{other}-retry", f"{other}-dlx"])
    for queue in mine.queues + mine.exchanges:
        assert queue == name or queue.startswith(f"{name}-")


def test_the_archive_is_no_subscriber_and_history_queues_belong_to_theirs() -> None:
    queues = [
        QueueRecord("indexer", ready=1, unacked=0, consumers=0),
        QueueRecord("indexer-history", ready=1, unacked=0, consumers=0),
        QueueRecord("indexer-history-lock", ready=0, unacked=0, consumers=0),
        QueueRecord("domain-events-archive", ready=500, unacked=0, consumers=0),
    ]
    bindings = [
        BindingRecord("domain-events", "indexer", "order.*"),
        BindingRecord("domain-events", "domain-events-archive", "#"),
    ]
    assert [summary.name for summary in subscribers(queues, bindings)] == ["indexer"]
    mine = belonging_to("indexer", queues, [])
    assert mine.queues == ("indexer", "indexer-history", "indexer-history-lock")
    assert mine.events == 2


def test_a_subscriber_called_n_history_is_not_taken_for_ns_hand_over_progress() -> None:
    queues = [
        QueueRecord("orders", ready=0, unacked=0, consumers=0),
        QueueRecord("orders-history", ready=7, unacked=0, consumers=0),  # a 3.x subscriber
    ]
    mine = belonging_to("orders", queues, [], other_subscribers={"orders-history"})
    assert mine.queues == ("orders",)
    assert mine.events == 0


def test_an_ordered_subscribers_partitions_hash_and_members_exchanges_are_its_own() -> None:
    queues = [
        QueueRecord("shipping-p000", ready=2, unacked=0, consumers=0),
        QueueRecord("shipping-p001", ready=1, unacked=1, consumers=0),
        QueueRecord("shipping-dl", ready=1, unacked=0, consumers=0),
        QueueRecord("shipping-parcels", ready=9, unacked=0, consumers=0),  # another subscriber
    ]
    exchanges = [
        "shipping-partitions",
        "shipping-members",
        "shipping-retry",
        "shipping-dlx",
        "domain-events",
    ]
    mine = belonging_to("shipping", queues, exchanges)
    assert mine.queues == ("shipping-dl", "shipping-p000", "shipping-p001")
    assert mine.exchanges == (
        "shipping-dlx",
        "shipping-members",
        "shipping-partitions",
        "shipping-retry",
    )
    assert mine.events == 5
