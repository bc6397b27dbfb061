"""Operator commands on an outbox: status, retry and discard of parked rows.

One implementation for ``domain-events outbox ...`` (SQLAlchemy, by database
URL) and ``manage.py domain_events_outbox ...`` (Django, by database alias).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from typing import Any, Protocol

from .store import OutboxStatus, OutboxStore, ParkedEvent


class Output(Protocol):
    def write(self, text: str, /) -> Any: ...


#: Parked rows listed by ``status`` unless told otherwise.
LIST_LIMIT = 20


def format_status(
    status: OutboxStatus, parked: list[ParkedEvent], now: datetime | None = None
) -> list[str]:
    """The lines ``status`` prints: counts, oldest pending age, then the parked rows."""
    now = now or datetime.now(timezone.utc)
    age = (
        "-"
        if status.oldest_pending_at is None
        else f"{max(0.0, (now - status.oldest_pending_at).total_seconds()):.0f} s"
    )
    lines = [
        f"pending: {status.pending} ({status.retrying} waiting to be tried again after a refusal)",
        f"parked: {status.parked}",
        f"oldest pending: {age}",
    ]
    if parked:
        lines.append("parked rows (id, routing key, event id, attempts, parked at, last error):")
        lines.extend(
            f"  {row.id}  {row.routing_key}  {row.uuid_string}  {row.attempts}  "
            f"{row.parked_at:%Y-%m-%d %H:%M:%S}  {row.last_error or ''}"
            for row in parked
        )
        if status.parked > len(parked):
            lines.append(f"  ... and {status.parked - len(parked)} more")
    return lines


def add_action_arguments(parser: argparse.ArgumentParser) -> None:
    """``status [--limit N]``, ``retry ID...|--all``, ``discard ID...|--all``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="pending and parked counts, the oldest pending age, the parked rows"
    )
    status.add_argument(
        "--limit", type=int, default=LIST_LIMIT, help=f"parked rows to list (default: {LIST_LIMIT})"
    )
    for verb, help_text in (
        ("retry", "make parked rows pending again (attempts from 0)"),
        ("discard", "delete parked rows (their events are never sent)"),
    ):
        action = actions.add_parser(verb, help=help_text)
        action.add_argument("ids", nargs="*", type=int, help="row ids (see status)")
        action.add_argument("--all", action="store_true", help="every parked row")


def run_action(store: OutboxStore, options: dict[str, Any], out: Output) -> int:
    """Run the action parsed by :func:`add_action_arguments`; return the exit status."""
    action = options["action"]
    if action == "status":
        limit = options.get("limit", LIST_LIMIT)
        for line in format_status(store.status(), store.parked(limit) if limit > 0 else []):
            out.write(f"{line}\n")
        return 0
    ids = options.get("ids") or []
    if bool(ids) == bool(options.get("all")):
        raise ValueError(f"{action}: give the ids of parked rows, or --all (not both)")
    chosen = None if options.get("all") else ids
    if action == "retry":
        count = store.retry_parked(chosen)
        out.write(f"{count} parked rows are pending again\n")
    else:
        count = store.discard_parked(chosen)
        out.write(f"{count} parked rows discarded\n")
    return 0


def add_outbox_command(commands: Any) -> None:
    """Add ``outbox`` to the ``domain-events`` command (SQLAlchemy databases, by URL)."""
    outbox = commands.add_parser(
        "outbox", help="status of an outbox table; retry or discard parked rows"
    )
    outbox.add_argument("--database-url", help="SQLAlchemy database URL (default: $DATABASE_URL)")
    add_action_arguments(outbox)
    outbox.set_defaults(run=_run_outbox_command)


def _run_outbox_command(args: argparse.Namespace, _url: object) -> int:
    database_url = args.database_url or os.environ.get("DATABASE_URL")
    if not database_url:
        raise ValueError("give --database-url or set DATABASE_URL")
    # Imported here: the other commands work without SQLAlchemy installed.
    from ..sqlalchemy.outbox import SQLAlchemyOutboxStore

    store = SQLAlchemyOutboxStore(database_url)
    try:
        return run_action(store, vars(args), sys.stdout)
    finally:
        store.close()
