"""``domain-events console``: the live event map and dead letters grouped by failure, in a browser.

:func:`serve` starts it on a free or given port; the CLI command is in
:mod:`.command`. See ``docs/console.md``.
"""

from __future__ import annotations

from .model import Console
from .server import TOKEN_VARIABLE, ConsoleServer


def serve(
    console: Console, token: str, *, addr: str = "127.0.0.1", port: int = 0, read_only: bool = False
) -> ConsoleServer:
    """A console server bound to ``addr``:``port`` (0: a free port); call ``serve_forever``."""
    return ConsoleServer((addr, port), console, token, read_only)


__all__ = ["TOKEN_VARIABLE", "Console", "ConsoleServer", "serve"]
