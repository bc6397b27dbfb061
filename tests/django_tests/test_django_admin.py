"""Operators find outbox rows (pending or sent) and inbox records in the Django admin."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from domain_event_broker.django import publish_on_commit


def test_admin_lists_pending_outbox_rows_and_finds_an_event_by_id() -> None:
    with transaction.atomic():
        event = publish_on_commit("shop.order.placed", {"n": 1}, outbox=True)
        publish_on_commit("shop.order.cancelled", {"n": 2}, outbox=True)
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "x"))
    try:
        listing = client.get("/admin/domain_event_broker_django/outboxevent/?sent_at__isnull=True")
        assert listing.status_code == 200
        assert b"2 outbox events" in listing.content
        assert b"shop.order.placed" in listing.content
        found = client.get(f"/admin/domain_event_broker_django/outboxevent/?q={event.uuid_string}")
        assert b"1 outbox event" in found.content
        assert event.uuid_string.encode() in found.content
        assert client.get("/admin/domain_event_broker_django/outboxevent/add/").status_code == 403
        inbox = client.get("/admin/domain_event_broker_django/processedevent/")
        assert inbox.status_code == 200
    finally:
        User.objects.all().delete()
