"""``manage.py domain_events_outbox status|retry|discard``: look after the transactional outbox."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from ....outbox.commands import add_action_arguments, run_action
from ...outbox import DjangoOutboxStore


class Command(BaseCommand):
    help = (
        "Outbox status (pending and parked rows, the oldest pending age), and retry or discard "
        "of parked rows: the ones the relay gave up on after the broker refused them too often."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")
        add_action_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run_action(DjangoOutboxStore(options["database"]), options, self.stdout)
        except ValueError as error:
            raise CommandError(str(error)) from error
