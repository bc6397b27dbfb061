"""``domain-events-relay``: publish a SQLAlchemy outbox table to RabbitMQ.

The database URL comes from ``--database-url`` or ``$DATABASE_URL``, the broker
from ``--url`` (with ``--ca-file``, ``--cert-file``, ``--key-file`` and
``--external-auth`` for TLS), ``$DOMAIN_EVENT_BROKER`` or the local broker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import DomainEventBrokerError
from ..outbox.relay import OutboxRelay
from ..outbox.running import (
    add_relay_arguments,
    relay_options,
    serve_probes_from,
    stop_on_signals,
)
from ..settings import (
    BrokerArgumentParser,
    add_broker_arguments,
    broker_from_arguments,
    mask_url,
    resolve_broker,
)
from .outbox import SQLAlchemyOutboxStore
from .tables import metadata


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``domain-events-relay``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    if not database_url:
        print("error: give --database-url or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        url = None if _names_no_broker(args.url) else resolve_broker(broker_from_arguments(args))
    except ValueError as error:  # e.g. --key-file without --cert-file
        print(f"error: {error}", file=sys.stderr)
        return 2
    if url is None:
        print(
            "error: no broker configured (--url or $DOMAIN_EVENT_BROKER is empty, or "
            "settings.BROKER is None): not relaying; every row stays pending",
            file=sys.stderr,
        )
        return 2
    store = SQLAlchemyOutboxStore(database_url)
    if args.create_table:
        metadata.create_all(store.engine)
    try:
        relay = OutboxRelay(store, url, **relay_options(vars(args)))
    except ValueError as error:
        store.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        stop_probes = serve_probes_from(relay, vars(args))
    except (ImportError, OSError) as error:  # no prometheus_client; a port in use
        relay.close()
        print(f"error: cannot serve the health probe or metrics: {error}", file=sys.stderr)
        return 2
    restore_signals = stop_on_signals(relay)
    print(f"relaying the outbox of {store.description} to {mask_url(url)}", flush=True)
    try:
        stats = relay.run(once=args.once, timeout=args.timeout)
    except DomainEventBrokerError as error:
        print(f"error: {error}; {relay.stats.summary()}", file=sys.stderr)
        return 1
    finally:
        restore_signals()
        stop_probes()
        relay.close()
    print(stats.summary(), flush=True)
    return 0


def _names_no_broker(given: str | None) -> bool:
    """An empty ``--url`` or ``$DOMAIN_EVENT_BROKER``: a deployment's missing value.

    Not a request for the local broker: the relay must not mark rows sent on a
    broker nobody consumes from.
    """
    if given is not None:
        return not given.strip()
    value = os.environ.get("DOMAIN_EVENT_BROKER")
    return value is not None and not value.strip()


def _parser() -> argparse.ArgumentParser:
    parser = BrokerArgumentParser(
        prog="domain-events-relay",
        description=(
            "Publish the events in the outbox table (domain_event_outbox), oldest first, with "
            "publisher confirms; keep polling until SIGTERM/SIGINT, or with --once until none "
            "is pending. Several relays may run at once on PostgreSQL and MySQL."
        ),
    )
    parser.add_argument("--database-url", help="SQLAlchemy database URL (default: $DATABASE_URL)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_broker_arguments(parser)
    add_relay_arguments(parser)
    parser.add_argument(
        "--create-table", action="store_true", help="create the outbox and inbox tables if missing"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every event")
    return parser


if __name__ == "__main__":
    sys.exit(main())
