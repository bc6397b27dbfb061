"""The ``domain-events`` command: demo, publish, listen, status, dead letters, console, history.

Every command takes ``--url`` (default: ``$DOMAIN_EVENT_BROKER``, else the
local broker) and the TLS options ``--ca-file``, ``--cert-file``, ``--key-file``
and ``--external-auth``. Run ``domain-events COMMAND --help`` for details.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from . import __version__
from ._pika import server_properties
from .connection import connect_blocking
from .console.command import add_console_command
from .contracts.commands import add_contract_commands
from .core.rabbitmq import RabbitMQVersion
from .demo import run_demo
from .errors import DomainEventBrokerError
from .events import DomainEvent
from .history_commands import add_history_commands
from .inventory import add_inventory_commands
from .outbox.commands import add_outbox_command
from .publisher import publish_domain_event
from .replay import (
    DISCARD,
    LEAVE,
    RETRY,
    interactive_callback,
    list_dead_letters,
    read_stdin_line,
    replay_dead_letters,
)
from .settings import (
    BrokerArgumentParser,
    BrokerSettings,
    add_broker_arguments,
    broker_from_arguments,
    mask_url,
    resolve_broker,
)
from .status_command import run_status
from .subscriber import Subscriber


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``domain-events``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _log_as_asked(args.verbose)
    if args.version:
        print("\n".join(_versions(resolve_broker(broker_from_arguments(args)))))
        return 0
    if args.command is None:
        parser.error("the following arguments are required: COMMAND")
    try:
        url = resolve_broker(broker_from_arguments(args))
        status: int = args.run(args, url)
        return status
    except (ValueError, TypeError) as error:  # bad input, including InvalidRoutingKey
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DomainEventBrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _versions(url: BrokerSettings | None) -> list[str]:
    """``domain-events X`` first (scripts read that line), then what it runs on."""
    lines = [f"domain-events {__version__}"]
    for package in ("pika", "aio-pika", "Django", "SQLAlchemy"):
        try:
            lines.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    if url is None:
        lines.append("RabbitMQ: no broker configured")
        return lines
    try:
        connection = connect_blocking(url, "version")
    except DomainEventBrokerError as error:
        lines.append(f"RabbitMQ at {mask_url(url)}: not reachable ({error})")
        return lines
    try:
        version = RabbitMQVersion.reported(server_properties(connection))
        shown = str(version) if version.known else "(version not reported)"
        lines.append(f"RabbitMQ {shown} at {mask_url(url)}")
    finally:
        connection.close()
    return lines


def _log_as_asked(verbose: int) -> None:
    """No -v: warnings only. -v: our DEBUG lines. -vv: pika's and aio-pika's as well."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose >= 1:
        logging.getLogger("domain_event_broker").setLevel(logging.DEBUG)
    if verbose == 0:
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="-v: log what the library does (DEBUG); -vv: pika's lines too",
    )


class _CommandParser(BrokerArgumentParser):
    """A command's parser: it takes the global options too (``status NAME --url URL``).

    Their defaults are suppressed here, so an option given before the command is kept
    when the command does not repeat it.
    """

    def __init__(self, **kwargs: Any) -> None:
        everywhere = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
        _add_global_options(everywhere)
        super().__init__(**{**kwargs, "parents": [*kwargs.get("parents", ()), everywhere]})


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``domain-events`` (the docs test checks each command line shown with it)."""
    parser = BrokerArgumentParser(
        prog="domain-events", description="Publish, watch and repair domain events on RabbitMQ."
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="show the versions of this command, of what it runs on, and of the broker",
    )
    _add_global_options(parser)
    parser.set_defaults(verbose=0)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    demo = commands.add_parser("demo", help="publish, subscribe, retry, dead-letter and replay")
    demo.set_defaults(run=_demo)

    publish = commands.add_parser("publish", help="publish one event")
    publish.add_argument("routing_key", help="e.g. user.registered")
    publish.add_argument("data", nargs="?", default="{}", help="the event data as JSON")
    publish.add_argument(
        "--domain-object-id", help="the id of the domain object the event is about (default: none)"
    )
    publish.set_defaults(run=_publish)

    listen = commands.add_parser(
        "listen", help="print events as they happen (a temporary queue of its own)"
    )
    listen.add_argument("binding_keys", nargs="+", help="e.g. 'user.*' or '#'")
    listen.add_argument("--count", type=int, help="stop after this many events (default: no limit)")
    listen.add_argument(
        "--timeout", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    listen.set_defaults(run=_listen)

    status = commands.add_parser("status", help="backlog, consumers and dead letters")
    status.add_argument(
        "names", nargs="*", help="subscriber names (none: every subscriber, as `subscribers`)"
    )
    status.add_argument(
        "--json", action="store_true", help="one JSON array of objects (null: no such queue)"
    )
    status.set_defaults(run=run_status)

    metrics = commands.add_parser(
        "metrics",
        help="serve Prometheus metrics: subscribers' queue gauges (and, with "
        "$PROMETHEUS_MULTIPROC_DIR, the counts of every process writing there)",
    )
    metrics.add_argument("names", nargs="*", help="subscriber names whose queues to watch")
    metrics.add_argument("--port", type=int, default=9100, help="default 9100")
    metrics.add_argument("--addr", default="0.0.0.0", help="default 0.0.0.0")
    metrics.add_argument(
        "--timeout", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    metrics.set_defaults(run=_metrics)

    dead = commands.add_parser("dead-letters", help="look at, replay or discard dead letters")
    actions = dead.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_CommandParser
    )
    show = actions.add_parser("list", help="show dead-lettered events (removes nothing)")
    show.add_argument("name", help="subscriber name")
    show.add_argument(
        "--limit", type=int, default=20, help="show at most this many events (default: 20)"
    )
    show.add_argument("--json", action="store_true", help="full events as JSON lines")
    show.set_defaults(run=_list_dead_letters)
    for verb, help_text in (
        ("replay", "move dead letters back to the subscriber"),
        ("discard", "delete dead letters"),
    ):
        action = actions.add_parser(verb, help=help_text)
        action.add_argument("names", nargs="+", help="subscriber names")
        action.add_argument("--all", action="store_true", help="every event, not only the first")
        if verb == "replay":
            action.add_argument(
                "--interactive",
                action="store_true",
                help="ask for each event: replay/discard/leave",
            )
        action.set_defaults(run=_replay, verb=verb)
    add_inventory_commands(commands)
    add_history_commands(commands, _CommandParser)
    add_outbox_command(commands)
    add_contract_commands(commands)
    add_console_command(commands)
    return parser


def _demo(args: argparse.Namespace, url: BrokerSettings) -> int:
    return run_demo(url)


def _publish(args: argparse.Namespace, url: BrokerSettings) -> int:
    try:
        data = json.loads(args.data)
    except ValueError as error:
        raise ValueError(f"the event data must be JSON: {error}") from None
    event = publish_domain_event(
        args.routing_key, data, domain_object_id=args.domain_object_id, connection_settings=url
    )
    print(json.dumps(event.event_data))
    return 0


def _listen(args: argparse.Namespace, url: BrokerSettings) -> int:
    seen = 0
    subscriber = Subscriber(url)

    def show(event: DomainEvent) -> None:
        nonlocal seen
        print(json.dumps(event.event_data), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            subscriber.stop_consuming()

    name = f"domain-events-listen-{socket.gethostname()}-{os.getpid()}"
    # Exclusive and auto-delete: the queue goes away with this command, so it
    # cannot keep collecting events after we stop watching.
    subscriber.register(
        show, name, args.binding_keys, durable=False, exclusive=True, auto_delete=True
    )
    print(f"listening on {mask_url(url)} for {', '.join(args.binding_keys)}", file=sys.stderr)
    subscriber.start_consuming(timeout=args.timeout)
    return 0


def _metrics(args: argparse.Namespace, url: str) -> int:
    try:
        from . import prometheus
    except ImportError:
        raise ValueError(
            "metrics needs prometheus_client: pip install 'domain-event-broker[prometheus]'"
        ) from None
    if args.names:
        prometheus.watch_subscribers(args.names, url)
    server = prometheus.serve_metrics(args.port, args.addr)
    host, port = server.server_address[:2]
    print(f"serving metrics on http://{host}:{port}/metrics", file=sys.stderr, flush=True)
    stop = threading.Event()
    stop.wait(args.timeout)
    server.shutdown()
    return 0


def _list_dead_letters(args: argparse.Namespace, url: BrokerSettings) -> int:
    letters = list_dead_letters(args.name, url, limit=args.limit)
    if not letters:
        print(f"no dead letters for {args.name}")
    for number, letter in enumerate(letters, 1):
        event = letter.event
        if args.json:
            record: dict[str, Any] = {
                "routing_key": letter.routing_key,
                "event": event.event_data if event else None,
                "body": None if event else letter.body.decode("utf-8", "replace"),
                "failed_subscriber": letter.failed_subscriber,
                "exception": letter.exception,
                "failed_at": letter.failed_at,
            }
            print(json.dumps(record))
            continue
        what = f"event {event.uuid_string}" if event else "not an event"
        print(f"{number}. {letter.routing_key} ({what})")
        print(
            f"   failed at {letter.failed_at or '?'}: {letter.exception or 'reason not recorded'}"
        )
        print(f"   data: {json.dumps(event.data) if event else letter.body[:200]!r}")
    return 0


def _replay(args: argparse.Namespace, url: BrokerSettings) -> int:
    if args.verb == "discard":
        callback: Any = lambda **kwargs: DISCARD  # noqa: E731
    elif getattr(args, "interactive", False):
        callback = interactive_callback(read_stdin_line, print)
    else:
        callback = lambda **kwargs: RETRY  # noqa: E731
    for name in args.names:
        decided: Counter[str] = Counter()
        # The true count, not 3.x's (which leaves out an event just left in place).
        left = replay_dead_letters(
            name, _counting(callback, decided), connection_settings=url, all_events=args.all
        )
        print(
            f"{name}: {decided[RETRY]} replayed, {decided[DISCARD]} discarded, "
            f"{decided[LEAVE]} left; {left} dead-lettered events remaining"
        )
    return 0


def _counting(callback: Any, decided: Counter[str]) -> Any:
    """``callback``, counting its decisions into ``decided``."""

    def counted(**kwargs: Any) -> Any:
        decision = callback(**kwargs)
        decided[decision] += 1
        return decision

    return counted


if __name__ == "__main__":
    sys.exit(main())
