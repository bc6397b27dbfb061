"""A subscriber registered with ``start_from="first"`` in a process of its own (history tests).

Usage: python history_process.py DRIVER URL EXCHANGE NAME JOURNAL

Writes ``done <uuid>`` to JOURNAL (flushed at once) for each event handled, so
that the test sees what was handled even after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import TextIO

from domain_event_broker import DomainEvent, Subscriber
from domain_event_broker.aio import AsyncSubscriber

#: Seconds per event: slow enough that a kill lands in the middle of history.
HANDLER_SECONDS = 0.002


def run_pika(url: str, exchange: str, name: str, journal: TextIO) -> None:
    def handle(event: DomainEvent) -> None:
        time.sleep(HANDLER_SECONDS)
        journal.write(f"done {event.uuid_string}\n")

    subscriber = Subscriber(url, exchange=exchange)
    subscriber.register(handle, name, ["order.*"], start_from="first")
    subscriber.start_consuming()


async def run_aio_pika(url: str, exchange: str, name: str, journal: TextIO) -> None:
    async def handle(event: DomainEvent) -> None:
        await asyncio.sleep(HANDLER_SECONDS)
        journal.write(f"done {event.uuid_string}\n")

    subscriber = AsyncSubscriber(url, exchange=exchange)
    subscriber.register(handle, name, ["order.*"], start_from="first")
    await subscriber.run()


def main() -> int:
    driver, url, exchange, name, journal_path = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, format=f"[{os.getpid()}] %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - open for the process' life
    if driver == "pika":
        run_pika(url, exchange, name, journal)
    else:
        asyncio.run(run_aio_pika(url, exchange, name, journal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
