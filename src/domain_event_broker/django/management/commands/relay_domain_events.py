"""``manage.py relay_domain_events``: publish the transactional outbox to RabbitMQ."""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS

from ....errors import DomainEventBrokerError, NoBroker
from ....outbox.relay import OutboxRelay
from ....outbox.running import (
    add_relay_arguments,
    relay_options,
    serve_probes_from,
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
        add_relay_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] > 1:
            logging.basicConfig(level=logging.DEBUG if options["verbosity"] > 2 else logging.INFO)
        url = resolve_url("")
        try:
            relay = OutboxRelay(
                DjangoOutboxStore(options["database"]), url, **relay_options(options)
            )
        except NoBroker as error:
            raise CommandError(f"{error} (the setting DOMAIN_EVENT_BROKER is None)") from error
        try:
            stop_probes = serve_probes_from(relay, options)
        except (ImportError, OSError) as error:  # no prometheus_client; a port in use
            relay.close()
            raise CommandError(f"cannot serve the health probe or metrics: {error}") from error
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
            stop_probes()
            relay.close()
        self.stdout.write(stats.summary())
