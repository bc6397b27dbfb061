"""publish_on_commit: after the outermost commit, at once outside one, never after a rollback."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import override_settings
from testproject.shop.models import Order

from django_tests.conftest import ALIASES, bodies
from domain_event_broker import EventNotSerializable, InvalidRoutingKey, publish_domain_event
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent

pytestmark = pytest.mark.parametrize("alias", ALIASES)


def test_commit_publishes_the_event_exactly_once(
    alias: str, broker_url: str, event_queue: str
) -> None:
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(reference="A-1")
        returned = publish_on_commit(
            f"{event_queue}.order.placed", {"reference": "A-1"}, "A-1", using=alias
        )
        assert bodies(broker_url, event_queue) == [], "published before the commit"
    [body] = bodies(broker_url, event_queue)
    assert body["routing_key"] == f"{event_queue}.order.placed"
    assert body["data"] == {"reference": "A-1"} and body["domain_object_id"] == "A-1"
    assert returned is None, "3.x returned nothing: the event is made at the commit"


def test_rollback_publishes_nothing(alias: str, broker_url: str, event_queue: str) -> None:
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        Order.objects.using(alias).create(reference="A-2")
        publish_on_commit(f"{event_queue}.order.placed", {"reference": "A-2"}, using=alias)
        raise RuntimeError("payment declined")
    # A marker published afterwards is confirmed, so anything before it has arrived too.
    marker = publish_domain_event(f"{event_queue}.marker", {})
    assert bodies(broker_url, event_queue) == [marker.event_data]
    assert not Order.objects.using(alias).exists()


def test_nested_atomic_blocks_publish_after_the_outermost_commit(
    alias: str, broker_url: str, event_queue: str
) -> None:
    with transaction.atomic(using=alias):
        with transaction.atomic(using=alias):
            publish_on_commit(f"{event_queue}.order.placed", {"n": 1}, using=alias)
        with transaction.atomic(using=alias):
            pass
        assert bodies(broker_url, event_queue) == [], "published when an inner block ended"
    assert [body["data"] for body in bodies(broker_url, event_queue)] == [{"n": 1}]


def test_rolled_back_savepoint_drops_only_its_own_events(
    alias: str, broker_url: str, event_queue: str
) -> None:
    with transaction.atomic(using=alias):
        publish_on_commit(f"{event_queue}.order.placed", {"n": 1}, using=alias)
        with pytest.raises(RuntimeError), transaction.atomic(using=alias):
            publish_on_commit(f"{event_queue}.order.cancelled", {"n": 1}, using=alias)
            raise RuntimeError("inner block fails")
    assert [body["routing_key"] for body in bodies(broker_url, event_queue)] == [
        f"{event_queue}.order.placed"
    ]


def test_without_a_transaction_it_publishes_at_once(
    alias: str, broker_url: str, event_queue: str
) -> None:
    publish_on_commit(f"{event_queue}.order.placed", {"n": 2}, using=alias)
    assert [body["data"] for body in bodies(broker_url, event_queue)] == [{"n": 2}]


def test_bad_event_fails_inside_the_transaction(alias: str, event_queue: str) -> None:
    with (
        pytest.raises(EventNotSerializable, match=r"data\['when'\]"),
        transaction.atomic(using=alias),
    ):
        Order.objects.using(alias).create(reference="A-3")
        publish_on_commit(f"{event_queue}.order.placed", {"when": object()}, using=alias)
    with pytest.raises(InvalidRoutingKey), transaction.atomic(using=alias):
        Order.objects.using(alias).create(reference="A-4")
        publish_on_commit(f"{event_queue}..placed", {}, using=alias)
    assert not Order.objects.using(alias).exists(), "the change was committed without its event"


@pytest.mark.parametrize("outbox", [False, True])
def test_no_broker_sends_nothing_and_fails_nothing(
    alias: str, outbox: bool, broker_url: str, event_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(django_settings, "DOMAIN_EVENT_BROKER", None)
    with transaction.atomic(using=alias):
        event = publish_on_commit(
            f"{event_queue}.order.placed", {"n": 3}, outbox=outbox, using=alias
        )
    if outbox:
        assert event is not None and event.data == {"n": 3} and event.uuid_string
    assert bodies(broker_url, event_queue) == []
    assert not OutboxEvent.objects.using(alias).exists()


def test_old_import_path_and_positional_arguments_work(
    alias: str, broker_url: str, event_queue: str
) -> None:
    from domain_event_broker.django.transaction import publish_on_commit as old_path

    with transaction.atomic(using=alias):
        old_path(f"{event_queue}.user.registered", {"user_id": 7}, "7", "uuid-7", 1.5, using=alias)
    [body] = bodies(broker_url, event_queue)
    assert body == {
        "routing_key": f"{event_queue}.user.registered",
        "data": {"user_id": 7},
        "domain_object_id": "7",
        "uuid_string": "uuid-7",
        "timestamp": 1.5,
    }


def test_outbox_setting_makes_publish_on_commit_write_rows(
    alias: str, broker_url: str, event_queue: str
) -> None:
    with override_settings(DOMAIN_EVENT_BROKER_OUTBOX=True), transaction.atomic(using=alias):
        event = publish_on_commit(f"{event_queue}.order.placed", {"n": 4}, using=alias)
    assert bodies(broker_url, event_queue) == [], "sent directly instead of through the outbox"
    assert event is not None
    [row] = OutboxEvent.objects.using(alias).all()
    assert (row.uuid_string, row.routing_key, row.sent_at) == (
        event.uuid_string,
        event.routing_key,
        None,
    )
