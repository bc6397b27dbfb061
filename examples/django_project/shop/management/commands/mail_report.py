"""`manage.py mail_report`: how many orders, mails and outbox rows there are."""

from typing import Any

from django.core.management.base import BaseCommand

from domain_event_broker.django.models import OutboxEvent
from shop.models import ConfirmationMail, Order


class Command(BaseCommand):
    help = "Count orders, confirmation mails and pending outbox rows."

    def handle(self, *args: Any, **options: Any) -> None:
        pending = OutboxEvent.objects.filter(sent_at__isnull=True).count()
        self.stdout.write(
            f"{Order.objects.count()} orders, {ConfirmationMail.objects.count()} mails, "
            f"{pending} outbox rows pending"
        )
