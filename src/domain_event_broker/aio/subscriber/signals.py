"""SIGTERM/SIGINT for the asyncio subscriber, through the event loop's signal handling.

The shared :func:`domain_event_broker.signals.stop_on_signals` does not fit
here: it installs ``signal.signal`` handlers, which run between two bytecodes
and not on the loop, and raises ``SystemExit`` on a second signal, which would
tear through the loop's tasks. Here the loop calls ``on_signal`` between two
callbacks, and a second signal drops the grace period instead.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

from ...signals import STOP_SIGNALS

Replaced = dict[signal.Signals, Any]


def install(on_signal: Callable[[signal.Signals], None]) -> Replaced:
    """Call ``on_signal`` on SIGTERM/SIGINT; returns the handlers it replaced, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    loop = asyncio.get_running_loop()
    replaced: Replaced = {}
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        replaced[signum] = previous
    return replaced


def restore(replaced: Replaced) -> None:
    """Put the application's own handlers back."""
    loop = asyncio.get_running_loop()
    for signum, previous in replaced.items():
        loop.remove_signal_handler(signum)  # sets SIG_DFL: the application's goes back
        if previous is not None:
            signal.signal(signum, previous)
