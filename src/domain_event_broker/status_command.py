"""``domain-events status [NAME...]``: each subscriber's backlog, consumers and dead letters,
and an ordered subscriber's partitions."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .errors import BrokerUnavailable
from .inventory import count_cell, print_table, run_subscribers
from .settings import BrokerSettings
from .status import SubscriberStatus, partition_states, subscriber_status


def run_status(args: argparse.Namespace, url: BrokerSettings) -> int:
    if not args.names:
        return run_subscribers(argparse.Namespace(management_url=None, json=args.json), url)
    states = [subscriber_status(name, url) for name in args.names]
    missing = any(state.waiting is None for state in states)
    if args.json:
        print(json.dumps([_as_json(state) for state in states]))
        return 1 if missing else 0
    rows = [("subscriber", "waiting", "consumers", "dead letters")]
    for state in states:
        name = state.name
        rows.append(
            (
                name,
                count_cell(state.waiting, "no such queue"),
                count_cell(state.consumers, "-"),
                count_cell(state.dead_letters, "no dead-letter queue"),
            )
        )
    print_table(rows)
    for state in states:
        if state.partitions:
            _print_partitions(state, url)
    return 1 if missing else 0


def _as_json(state: SubscriberStatus) -> dict[str, object]:
    """The JSON object of a subscriber: ``partitions`` only for an ordered one (as before)."""
    fields = dataclasses.asdict(state)
    if not state.partitions:
        del fields["partitions"]
    return fields


def _print_partitions(state: SubscriberStatus, url: BrokerSettings) -> None:
    print(f"\n{state.name}: {state.partitions} partitions (ordered by domain_object_id)")
    try:
        partitions = partition_states(state.name, state.partitions, url)
    except BrokerUnavailable as error:
        print(f"which consumer is active on each partition is unknown: {error}")
        return
    rows = [("partition", "ready", "unacked", "consumers", "active")]
    for partition in partitions:
        rows.append(
            (
                partition.queue,
                str(partition.ready),
                str(partition.unacked),
                str(partition.consumers),
                partition.active or "- (no consumer)",
            )
        )
    print_table(rows)
