"""A subscriber in a process of its own, as a deployed worker runs, for the fault tests.

Usage: python subscriber_process.py DRIVER URL NAME HANDLER_SECONDS JOURNAL

DRIVER is ``pika`` (:class:`Subscriber`) or ``aio-pika`` (:class:`AsyncSubscriber`).
Writes ``start <uuid>`` and ``done <uuid>`` lines to JOURNAL (flushed at once),
so the test can see what happened even after a SIGKILL.
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


def run_pika(url: str, name: str, seconds: float, journal: TextIO) -> None:
    def handle(event: DomainEvent) -> None:
        journal.write(f"start {event.uuid_string} {os.getpid()}\n")
        time.sleep(seconds)
        journal.write(f"done {event.uuid_string} {os.getpid()}\n")

    subscriber = Subscriber(url, shutdown_grace_period=20)
    subscriber.register(handle, name, [f"{name}.#"])
    journal.write(f"ready - {os.getpid()}\n")
    subscriber.start_consuming()


async def run_aio_pika(url: str, name: str, seconds: float, journal: TextIO) -> None:
    async def handle(event: DomainEvent) -> None:
        journal.write(f"start {event.uuid_string} {os.getpid()}\n")
        await asyncio.sleep(seconds)
        journal.write(f"done {event.uuid_string} {os.getpid()}\n")

    subscriber = AsyncSubscriber(url, shutdown_grace_period=20)
    subscriber.register(handle, name, [f"{name}.#"])
    await subscriber.declare()
    journal.write(f"ready - {os.getpid()}\n")
    await subscriber.run()


def main() -> int:
    driver, url, name = sys.argv[1], sys.argv[2], sys.argv[3]
    seconds, journal_path = float(sys.argv[4]), sys.argv[5]
    logging.basicConfig(level=logging.INFO, format=f"[{os.getpid()}] %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - open for the process' life
    if driver == "pika":
        run_pika(url, name, seconds, journal)
    else:
        asyncio.run(run_aio_pika(url, name, seconds, journal))
    journal.write(f"stopped - {os.getpid()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
