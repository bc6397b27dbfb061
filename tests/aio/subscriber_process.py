"""An asyncio subscriber in a process of its own, as a deployed worker runs, for fault tests.

Usage: python subscriber_process.py URL NAME HANDLER_SECONDS JOURNAL

Writes ``start <uuid>`` and ``done <uuid>`` lines to JOURNAL (flushed at once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from domain_event_broker import DomainEvent
from domain_event_broker.aio import AsyncSubscriber


async def main() -> int:
    url, name, seconds, journal_path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.INFO, format=f"[{os.getpid()}] %(name)s %(message)s")
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - open for the process' life

    async def handle(event: DomainEvent) -> None:
        journal.write(f"start {event.uuid_string} {os.getpid()}\n")
        await asyncio.sleep(seconds)
        journal.write(f"done {event.uuid_string} {os.getpid()}\n")

    subscriber = AsyncSubscriber(url, shutdown_grace_period=20)
    subscriber.register(handle, name, [f"{name}.#"])
    await subscriber.declare()
    journal.write(f"ready - {os.getpid()}\n")
    await subscriber.run()
    journal.write(f"stopped - {os.getpid()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
