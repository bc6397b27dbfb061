"""``manage.py relay_domain_events``: publish the transactional outbox to RabbitMQ."""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from ....errors import DomainEventBrokerError
from ....outbox.relay import (
    BATCH_SIZE,
    MAX_BACKOFF,
    POLL_INTERVAL,
    RETENTION,
    OutboxRelay,
    stop_on_signals,
)
from ....settings import mask_url, resolve_url
from ...outbox import DjangoOutboxStore


class Command(BaseCommand):
    help = (
        "Publish the events written to the transactional outbox, oldest first, with publisher "
        "confirms; keep polling until SIGTERM/SIGINT (or, with --once, until none is pending). "
        "Several relays may run at once."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")
        parser.add_argument("--once", action="store_true", help="exit when nothing is pending")
        parser.add_argument("--timeout", type=float, help="stop after this many seconds")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=POLL_INTERVAL,
            help="seconds between looks when nothing is pending",
        )
        parser.add_argument(
            "--retention-days",
            type=float,
            default=RETENTION / timedelta(days=1),
            help="delete sent rows after this many days (0: at once; -1: never)",
        )
        parser.add_argument(
            "--max-backoff",
            type=float,
            default=MAX_BACKOFF,
            help="longest pause between attempts while the broker is unreachable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] > 1:
            logging.basicConfig(level=logging.DEBUG if options["verbosity"] > 2 else logging.INFO)
        days = options["retention_days"]
        url = resolve_url("")
        relay = OutboxRelay(
            DjangoOutboxStore(options["database"]),
            url,
            batch_size=options["batch_size"],
            poll_interval=options["poll_interval"],
            retention=None if days < 0 else timedelta(days=days),
            max_backoff=options["max_backoff"],
        )
        restore_signals = stop_on_signals(relay)
        self.stdout.write(
            f"relaying the outbox of database {options['database']!r} to {mask_url(url)}"
        )
        self.stdout.flush()
        try:
            stats = relay.run(once=options["once"], timeout=options["timeout"])
        except DomainEventBrokerError as error:
            raise CommandError(f"{error}; {relay.stats.summary()}") from error
        finally:
            restore_signals()
            relay.close()
        self.stdout.write(stats.summary())
