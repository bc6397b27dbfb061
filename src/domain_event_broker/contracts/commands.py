"""The contract commands of ``domain-events``: ``asyncapi``, ``contracts check``, ``check``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..settings import BrokerSettings
from .asyncapi import document, import_module
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


def run_asyncapi(args: argparse.Namespace, url: BrokerSettings | None) -> int:
    module = import_module(args.module)
    sys.stdout.write(dump(document(args.module, module), args.yaml))
    return 0
