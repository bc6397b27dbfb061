"""The contract commands of ``domain-events``: ``asyncapi``, ``contracts check``, ``check``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..connection import connect_blocking
from ..core.drift import Broker, differences
from ..core.operations import Operation, QueueDeclare
from ..management import ManagementAPI
from ..settings import BrokerSettings, mask_url
from ..status import queue_counts
from .asyncapi import document, import_module, subscribers_in
from .compatibility import changes


def add_contract_commands(commands: Any) -> None:
    """Add ``asyncapi``, ``contracts check`` and ``check`` to the ``domain-events`` command."""
    asyncapi = commands.add_parser(
        "asyncapi", help="write the AsyncAPI 3.0 document of a module's subscribers and events"
    )
    asyncapi.add_argument("module", help="a dotted module name, e.g. myservice.events")
    asyncapi.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    asyncapi.set_defaults(run=run_asyncapi)

    contracts = commands.add_parser("contracts", help="compare event contracts between versions")
    actions = contracts.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="whether consumers built against OLD can read what NEW says producers send; "
        "exit 1 on a break, 2 on a usage error",
    )
    check.add_argument(
        "old", help="the AsyncAPI document (JSON or YAML) consumers were built against"
    )
    check.add_argument("new", help="the AsyncAPI document of what producers send now")
    check.set_defaults(run=run_contracts_check)

    drift = commands.add_parser(
        "check",
        help="compare what a module's subscribers would declare with the broker; print each "
        "difference and its fix (exit 1 when there is one)",
    )
    drift.add_argument("module", help="a dotted module name, e.g. myservice.subscribers")
    drift.add_argument(
        "--management-url",
        help="the management API, e.g. http://rabbit:15672 (default: the AMQP host, at the "
        "AMQP port + 10000)",
    )
    drift.set_defaults(run=run_check)


def dump(value: Any, as_yaml: bool) -> str:
    if not as_yaml:
        return json.dumps(value, indent=2) + "\n"
    try:
        import yaml
    except ImportError:
        raise ValueError("--yaml needs PyYAML: pip install 'domain-event-broker[yaml]'") from None
    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return text


def load(path: str) -> Any:
    """An AsyncAPI document from a JSON or YAML file; ValueError (a usage error) otherwise."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise ValueError(
            f"{path} is not JSON; for YAML: pip install 'domain-event-broker[yaml]'"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is neither JSON nor YAML: {error}") from None


def run_contracts_check(args: argparse.Namespace, url: BrokerSettings | None) -> int:
    old, new = load(args.old), load(args.new)
    try:
        found = changes(old, new)
    except ValueError as error:
        raise ValueError(f"{args.old} or {args.new}: {error}") from None
    for change in found:
        print(change)
    breaking = sum(change.breaks for change in found)
    print(
        f"{breaking} breaking change(s) of {len(found)}"
        if found
        else "no changes to the event contracts"
    )
    return 1 if breaking else 0


def run_check(args: argparse.Namespace, url: BrokerSettings | None) -> int:
    if url is None:
        raise ValueError("no broker configured: give --url or set DOMAIN_EVENT_BROKER")
    found = subscribers_in(import_module(args.module))
    if not found:
        raise ValueError(f"module {args.module!r} holds no Subscriber or AsyncSubscriber")
    api = ManagementAPI(url, args.management_url)
    rabbitmq = api.rabbitmq_version()
    declared = [
        operation
        for subscriber in found
        for registration in subscriber.registrations
        for operation in registration.topology.declarations(rabbitmq)
    ]
    broker = with_exact_counts(url, api.broker(), declared)
    found_differences = differences(declared, broker)
    for difference in found_differences:
        print(difference)
    print(
        f"{len(found_differences)} difference(s) between {args.module} and {mask_url(url)}"
        if found_differences
        else f"the broker at {mask_url(url)} holds what {args.module} declares"
    )
    return 1 if found_differences else 0


def with_exact_counts(url: BrokerSettings, broker: Broker, declared: list[Operation]) -> Broker:
    """``broker`` with the events of each declared queue counted now: the management API's
    figures may be seconds old, and a queue that holds events is never offered for deletion."""
    names = {
        op.name for op in declared if isinstance(op, QueueDeclare) and op.name in broker.queues
    }
    if not names:
        return broker
    queues = dict(broker.queues)
    connection = connect_blocking(url, "drift check")
    try:
        for name in names:
            ready, _ = queue_counts(connection, name)
            state = queues[name]
            queues[name] = dataclasses.replace(state, messages=max(state.messages, ready or 0))
    finally:
        connection.close()
    return dataclasses.replace(broker, queues=queues)


def run_asyncapi(args: argparse.Namespace, url: BrokerSettings | None) -> int:
    module = import_module(args.module)
    sys.stdout.write(dump(document(args.module, module), args.yaml))
    return 0
