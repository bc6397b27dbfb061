"""``domain-events subscribers`` and ``domain-events delete``: what a broker holds, and clearing it.

Experiments leave durable queues behind that go on collecting events; these
list every subscriber of a vhost and remove one's queues and exchanges. The
listing comes from the management API (:mod:`.management`), the deletion goes
over AMQP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import pika.exceptions

from .connection import connect_blocking
from .core.archive import RESOURCE_LOCKED
from .core.defaults import ANSWER_TIMEOUT
from .core.inventory import Belongings, QueueRecord, belonging_to, subscribers
from .core.topology import DEFAULT_EXCHANGE
from .management import ManagementAPI
from .replay import read_stdin_line
from .settings import BrokerSettings, mask_url


def add_inventory_commands(commands: Any) -> None:
    """Add ``subscribers`` and ``delete`` to the ``domain-events`` command."""
    listing = commands.add_parser(
        "subscribers",
        help="list the subscribers on the broker: keys, consumers, waiting, dead letters, retries",
    )
    _add_management_url(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array of objects")
    listing.set_defaults(run=run_subscribers)

    delete = commands.add_parser(
        "delete",
        help="remove a subscriber's queues and exchanges (its events with them), after asking",
    )
    delete.add_argument("name", help="the subscriber's name (its queue's name)")
    delete.add_argument(
        "--force", action="store_true", help="delete even while it has consumers (default: refuse)"
    )
    delete.add_argument(
        "--yes", action="store_true", help="do not ask for the name again (default: ask)"
    )
    _add_management_url(delete)
    delete.set_defaults(run=run_delete)


def _add_management_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--management-url",
        help="the management API, e.g. http://rabbit:15672 (default: the AMQP host, at the "
        "AMQP port + 10000: 15672, or 15671 for amqps://)",
    )


def exact_counts(url: BrokerSettings, queues: list[QueueRecord]) -> list[QueueRecord]:
    """``queues`` with their ready events and consumers as RabbitMQ counts them now.

    The management API's figures are statistics, up to 5 s old: a queue just
    filled shows empty, a consumer just started shows none. A passive declare
    answers with the queue's counts of this moment (unacked ones it does not
    count: those stay the statistics'). A queue gone meanwhile is left out; an
    exclusive queue of another connection (``listen``'s) keeps the API's figures.
    """
    exact = []
    connection = connect_blocking(url, "inventory")
    try:
        # One channel for every look (a round trip each); a missing queue closes it.
        channel = connection.channel()
        for queue in queues:
            if channel.is_closed:
                channel = connection.channel()
            try:
                method = channel.queue_declare(queue.name, passive=True).method
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code == 404:
                    continue  # gone meanwhile
                if error.reply_code == RESOURCE_LOCKED:
                    exact.append(queue)  # another connection's exclusive queue: the API's
                    continue
                raise
            exact.append(
                dataclasses.replace(
                    queue, ready=int(method.message_count), consumers=int(method.consumer_count)
                )
            )
    finally:
        if connection.is_open:
            connection.close()
    return exact


def run_subscribers(args: argparse.Namespace, url: BrokerSettings) -> int:
    api = ManagementAPI(url, args.management_url)
    found = subscribers(exact_counts(url, api.queues()), api.bindings())
    if args.json:
        print(json.dumps([dataclasses.asdict(summary) for summary in found]))
        return 0
    if not found:
        print(f"no subscribers in vhost {api.vhost!r} of {mask_url(url)}")
        return 0
    rows = [("subscriber", "keys", "consumers", "waiting", "dead letters", "retries waiting")]
    for summary in found:
        rows.append(
            (
                summary.name,
                ", ".join(summary.binding_keys),
                str(summary.consumers),
                str(summary.waiting + summary.unacked),
                "-" if summary.dead_letters is None else str(summary.dead_letters),
                str(summary.retries_waiting),
            )
        )
    print_table(rows)
    return 0


def count_cell(value: int | None, otherwise: str) -> str:
    """A table cell for a count that may be unknown (``otherwise`` says why)."""
    return otherwise if value is None else str(value)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """``rows`` (the first one the headings) in columns as wide as their widest cell."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def run_delete(
    args: argparse.Namespace,
    url: BrokerSettings,
    read_line: Callable[[float], str | None] | None = None,
) -> int:
    api = ManagementAPI(url, args.management_url)
    queues = exact_counts(url, api.queues())
    bound = {binding.queue for binding in api.bindings() if binding.source == DEFAULT_EXCHANGE}
    mine = belonging_to(args.name, queues, api.exchanges(), bound - {args.name})
    if not mine.queues and not mine.exchanges:
        raise ValueError(f"there is no subscriber {args.name!r} in vhost {api.vhost!r}")
    consumers = sum(queue.consumers for queue in queues if queue.name == args.name)
    if consumers and not args.force:
        raise ValueError(
            f"subscriber {args.name!r} has {consumers} consumer(s): stop them first (they "
            "would declare it again), or give --force"
        )
    print(_plan(args.name, mine))
    if not args.yes:
        print(f"Type {args.name} to delete it: ", end="", flush=True)
        answer = (read_line or read_stdin_line)(ANSWER_TIMEOUT)
        if answer is None or answer.strip() != args.name:
            print("not deleted")
            return 1
    _delete(url, mine)
    print(f"deleted subscriber {args.name}: {mine.events} events removed")
    return 0


def _plan(name: str, mine: Belongings) -> str:
    return (
        f"subscriber {name}: queues {', '.join(mine.queues) or '-'}; exchanges "
        f"{', '.join(mine.exchanges) or '-'}; {mine.events} events in them are lost"
    )


def _delete(url: BrokerSettings, mine: Belongings) -> None:
    connection = connect_blocking(url, "delete")
    try:
        channel = connection.channel()
        for queue in mine.queues:
            try:
                channel.queue_delete(queue)
            except pika.exceptions.ChannelClosedByBroker as error:
                if error.reply_code != RESOURCE_LOCKED:
                    raise
                # A history lock held by a live connection: it goes when that one closes.
                print(f"{queue} is held by a running process: it goes when that one stops")
                channel = connection.channel()
        for exchange in mine.exchanges:
            channel.exchange_delete(exchange)
    finally:
        if connection.is_open:
            connection.close()


__all__ = ["add_inventory_commands", "print_table", "run_delete", "run_subscribers"]
