"""The ``console`` command of ``domain-events``."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import Any

from ..settings import BrokerSettings
from . import serve
from .model import Console
from .server import TOKEN_VARIABLE

log = logging.getLogger(__name__)


def add_console_command(commands: Any) -> None:
    console = commands.add_parser(
        "console",
        help="the operator console in a browser: event map, dead letters by failure, outbox",
    )
    console.add_argument("--port", type=int, default=8025, help="default 8025 (0: a free port)")
    console.add_argument(
        "--addr", default="127.0.0.1", help="default 127.0.0.1 (loopback: this machine only)"
    )
    console.add_argument(
        "--management-url",
        help="the management API, e.g. http://rabbit:15672 (default: the AMQP host, at the "
        "AMQP port + 10000)",
    )
    console.add_argument(
        "--database-url",
        help="SQLAlchemy URL of a database with the outbox table, for the outbox view "
        "(default: no outbox view)",
    )
    console.add_argument(
        "--read-only", action="store_true", help="show everything, offer no action"
    )
    console.set_defaults(run=run_console)


def run_console(args: argparse.Namespace, url: BrokerSettings) -> int:
    outbox = None
    if args.database_url:
        # Imported here: the console works without SQLAlchemy installed.
        from ..sqlalchemy.outbox import SQLAlchemyOutboxStore

        outbox = SQLAlchemyOutboxStore(args.database_url)
    token = os.environ.get(TOKEN_VARIABLE, "")
    printed = not token and not args.read_only
    if printed:
        token = secrets.token_urlsafe(18)
    console = Console(url, args.management_url, outbox)
    console.watch_routing_keys()
    server = serve(
        console,
        token or secrets.token_urlsafe(18),
        addr=args.addr,
        port=args.port,
        read_only=args.read_only,
    )
    mode = "read-only" if args.read_only else "actions need the token"
    print(f"domain-events console on {server.url} ({mode})", file=sys.stderr, flush=True)
    if printed:
        # Shown once, on the operator's terminal only (never logged): the login token.
        print(f"token: {token}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        console.close()
        if outbox is not None:
            outbox.close()
    return 0
