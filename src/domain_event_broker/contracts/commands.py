"""The contract commands of ``domain-events``: ``asyncapi``, ``contracts check``, ``check``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..settings import BrokerSettings
from .asyncapi import document, import_module


def add_contract_commands(commands: Any) -> None:
    """Add ``asyncapi``, ``contracts check`` and ``check`` to the ``domain-events`` command."""
    asyncapi = commands.add_parser(
        "asyncapi", help="write the AsyncAPI 3.0 document of a module's subscribers and events"
    )
    asyncapi.add_argument("module", help="a dotted module name, e.g. myservice.events")
    asyncapi.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    asyncapi.set_defaults(run=run_asyncapi)


def dump(value: Any, as_yaml: bool) -> str:
    if not as_yaml:
        return json.dumps(value, indent=2) + "\n"
    try:
        import yaml
    except ImportError:
        raise ValueError("--yaml needs PyYAML: pip install 'domain-event-broker[yaml]'") from None
    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return text


def run_asyncapi(args: argparse.Namespace, url: BrokerSettings | None) -> int:
    module = import_module(args.module)
    sys.stdout.write(dump(document(args.module, module), args.yaml))
    return 0
