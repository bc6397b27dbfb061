"""``domain-events archive ...`` and ``domain-events history ...``: the archive, from a shell.

- ``archive enable|disable|status``: the stream that keeps the exchange's events;
- ``history show PATTERN``: what was published, in order, consuming nothing;
- ``history replay --to NAME``: a window of the archive re-fed to one subscriber
  (through its ``N-retry`` exchange, bound to its queue only), with progress.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from .connection import as_broker, connect_blocking
from .core.archive import (
    BindingMatcher,
    archive_name,
    in_window,
    parse_bytes,
    parse_duration,
    past_window,
)
from .core.history import FIRST, StartPoint, as_utc
from .core.topology import REPLAYED_HEADER, retry_exchange_name
from .events import DomainEvent
from .history import (
    QUIET_END,
    Archived,
    archive_status,
    disable_archive,
    enable_archive,
    read_archive,
    require_archive,
)
from .inventory import print_table
from .management import ManagementAPI
from .publisher.messages import persistent_json
from .settings import BrokerSettings
from .status import queue_counts
from .topology import DEFAULT_EXCHANGE


def add_history_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add ``archive`` and ``history`` to the ``domain-events`` command."""
    archive = commands.add_parser("archive", help="keep the exchange's events in a stream")
    verbs = archive.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=parser_class
    )
    enable = verbs.add_parser("enable", help="keep every event published from now on")
    enable.add_argument(
        "--max-age", default="7D", help="how long events are kept: 30D, 12h, ... (default: 7D)"
    )
    enable.add_argument(
        "--max-bytes", help="and at most this much: 20GB, 500MB, ... (default: no limit)"
    )
    disable = verbs.add_parser("disable", help="delete the archive and every event in it")
    status = verbs.add_parser("status", help="size, oldest event and retention")
    for parser, run in ((enable, _enable), (disable, _disable), (status, _status)):
        _add_exchange(parser)
        parser.set_defaults(run=run)

    history = commands.add_parser("history", help="browse the archive, or re-feed a subscriber")
    actions = history.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=parser_class
    )
    show = actions.add_parser("show", help="print archived events, in order (consumes nothing)")
    show.add_argument("pattern", help="a binding key: order.*, user.#, # for all")
    show.add_argument("--object-id", help="only events of this domain object (default: all)")
    show.add_argument("--json", action="store_true", help="the events as JSON lines")
    show.set_defaults(run=_show)
    replay = actions.add_parser(
        "replay", help="re-feed a window of the archive to one subscriber (its keys only)"
    )
    replay.add_argument("--to", required=True, help="the subscriber's name")
    replay.add_argument("--dry-run", action="store_true", help="count only, send nothing")
    replay.set_defaults(run=_replay)
    for parser in (show, replay):
        parser.add_argument(
            "--since",
            required=parser is replay,
            help="from: 2h, 30m, 7D ago, or an ISO time (default for show: the first event)",
        )
        parser.add_argument("--until", help="to (not included): as --since (default: now)")
        _add_exchange(parser)


def _add_exchange(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", default=DEFAULT_EXCHANGE, help=f"default: {DEFAULT_EXCHANGE}")


def _enable(args: argparse.Namespace, url: BrokerSettings) -> int:
    max_bytes = None if args.max_bytes is None else parse_bytes(args.max_bytes)
    status = enable_archive(url, args.exchange, args.max_age, max_bytes)
    print(f"archive {status.name} keeps the events of {args.exchange} for {args.max_age}")
    return 0


def _disable(args: argparse.Namespace, url: BrokerSettings) -> int:
    kept = disable_archive(url, args.exchange)
    print(f"archive {archive_name(args.exchange)} deleted ({kept} events)")
    return 0


def _status(args: argparse.Namespace, url: BrokerSettings) -> int:
    status = archive_status(url, args.exchange)
    oldest = "-" if status.oldest is None else status.oldest.isoformat(timespec="seconds")
    size = "no limit" if status.max_bytes is None else f"{status.max_bytes} bytes"
    print_table(
        [
            ("archive", "events", "oldest event", "max age", "max size"),
            (status.name, str(status.events), oldest, status.max_age or "-", size),
        ]
    )
    return 0


def moment(text: str | None, now: datetime) -> float | None:
    """``--since``, ``--until``: a duration ago (``2h``) or an ISO time (naive: UTC), in Unix s."""
    if text is None:
        return None
    try:
        return (now - parse_duration(text)).timestamp()
    except ValueError:
        pass
    try:
        return as_utc(datetime.fromisoformat(text)).timestamp()
    except ValueError:
        raise ValueError(f"{text!r}: a duration ago (2h, 30m, 7D) or an ISO time") from None


def _window(
    args: argparse.Namespace, url: BrokerSettings, keys: tuple[str, ...]
) -> Iterator[tuple[DomainEvent, Archived]]:
    """The archived events in the window that ``keys`` match, in archive order.

    The read stops at the first event well after ``--until`` (now when not
    given; see ``past_window``) or at the archive's end, whichever comes first:
    neither the rest of a long archive nor the events published meanwhile are read.
    """
    now = datetime.now(timezone.utc)
    since, until = moment(args.since, now), moment(args.until, now)
    if until is None:
        until = now.timestamp()
    matches = BindingMatcher(keys)
    connection = connect_blocking(url, "history")
    try:
        require_archive(connection, args.exchange)
        offset = FIRST if since is None else StartPoint(since).offset
        messages = read_archive(connection, archive_name(args.exchange), offset, QUIET_END)
        with contextlib.closing(messages):  # the archive's channel closes at the stop
            for archived in messages:
                event = archived.event
                if event is None:
                    continue
                if past_window(event.timestamp, until):
                    return
                if not matches(archived.routing_key):
                    continue
                if in_window(event, since, until) and _of_object(event, args):
                    yield event, archived
    finally:
        if connection.is_open:
            connection.close()


def _of_object(event: DomainEvent, args: argparse.Namespace) -> bool:
    wanted = getattr(args, "object_id", None)
    return wanted is None or str(event.domain_object_id) == wanted


def _show(args: argparse.Namespace, url: BrokerSettings) -> int:
    shown = 0
    for event, _ in _window(args, url, (args.pattern,)):
        shown += 1
        if args.json:
            print(json.dumps(event.event_data), flush=True)
            continue
        when = datetime.fromtimestamp(event.timestamp, timezone.utc).isoformat(timespec="seconds")
        print(f"{when}  {event.routing_key}  {event.uuid_string}  {json.dumps(event.data)}")
    print(f"{shown} events", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace, url: BrokerSettings) -> int:
    keys = _binding_keys(url, args.to, args.exchange)
    if args.dry_run:
        count = sum(1 for _ in _window(args, url, keys))
        print(f"would replay {count} events to {args.to}")
        return 0
    connection = connect_blocking(url, "history")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        events = list(_window(args, url, keys))
        for number, (event, archived) in enumerate(events, 1):
            # The archived bytes as published; the header says it is a replay.
            properties = persistent_json(event.uuid_string, {REPLAYED_HEADER: 1})
            channel.basic_publish(
                retry_exchange_name(args.to), archived.routing_key, archived.body, properties
            )
            _progress(number, len(events))
        print(f"replayed {len(events)} events to {args.to}")
    finally:
        if connection.is_open:
            connection.close()
    return 0


def _binding_keys(url: BrokerSettings, name: str, exchange: str) -> tuple[str, ...]:
    """The keys subscriber ``name`` is bound with; refused when there is no such subscriber."""
    connection = connect_blocking(url, "history")
    try:
        if queue_counts(connection, name)[0] is None:
            raise ValueError(
                f"there is no subscriber {name!r} on this broker (no queue of that name in "
                "this vhost): check the name and --url"
            )
    finally:
        if connection.is_open:
            connection.close()
    keys = tuple(
        binding.routing_key
        for binding in ManagementAPI(as_broker(url)).bindings()
        if binding.source == exchange and binding.queue == name
    )
    if not keys:
        raise ValueError(f"subscriber {name!r} is not bound to {exchange!r}: nothing to replay")
    return keys


def _progress(done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr)
    sys.stderr.flush()


__all__ = ["add_history_commands", "moment"]
