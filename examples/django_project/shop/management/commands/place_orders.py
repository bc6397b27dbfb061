"""`manage.py place_orders N`: place N orders, each with its event in the outbox."""

import uuid
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from shop.services import place_order


class Command(BaseCommand):
    help = "Place orders; each writes its shop.order.placed event to the outbox."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("count", type=int, nargs="?", default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        for _ in range(options["count"]):
            order = place_order(f"order-{uuid.uuid4().hex[:8]}", "customer@example.com")
            self.stdout.write(f"placed {order.reference}")
