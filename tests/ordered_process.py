"""An ordered subscriber in a process of its own, for tests/test_ordered_processes.py.

Usage: python ordered_process.py DRIVER URL NAME PARTITIONS HANDLER_SECONDS FAILURES JOURNAL
[QUEUE_TYPE]

Writes ``<pid> handled <object> <n> <retries> <time.time()>`` for each event it handled (flushed at
once, so the test sees it even after a SIGKILL). FAILURES ``yes``: a Retry on the
first delivery of every 7th event, a ValueError (dead letter) on every 20th.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import TextIO

from domain_event_broker import DomainEvent, Retry, Subscriber
from domain_event_broker.aio import AsyncSubscriber


def outcome(event: DomainEvent, failures: bool, journal: TextIO) -> None:
    n = event.data["n"]
    if failures and n % 20 == 19:
        raise ValueError(f"event {n} cannot be handled")
    if failures and n % 7 == 6 and event.retries == 0:
        raise Retry(delay=0.5)
    handled = f"{event.domain_object_id} {n} {event.retries} {time.time():.3f}"
    journal.write(f"{os.getpid()} handled {handled}\n")


def main() -> int:
    driver, url, name, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    seconds, failures, journal_path = float(sys.argv[5]), sys.argv[6] == "yes", sys.argv[7]
    logging.basicConfig(
        level=getattr(logging, os.environ.get("ORDERED_LOG", "CRITICAL")),
        format=f"%(asctime)s [{os.getpid()}] %(name)s %(message)s",
    )
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - open for the process' life
    queue_type = sys.argv[8] if len(sys.argv) > 8 else "classic"
    options = {
        "ordered_by": "domain_object_id",
        "partitions": partitions,
        "dead_letter": True,
        "queue_type": queue_type,
    }
    if driver == "pika":

        def handle(event: DomainEvent) -> None:
            time.sleep(seconds)
            outcome(event, failures, journal)

        subscriber = Subscriber(url, workers=8, prefetch_count=64)
        subscriber.register(handle, name, ["order.*"], max_retries=2, **options)
        journal.write(f"{os.getpid()} ready\n")
        subscriber.start_consuming()
    else:

        async def handle_async(event: DomainEvent) -> None:
            await asyncio.sleep(seconds)
            outcome(event, failures, journal)

        async def run() -> None:
            subscriber = AsyncSubscriber(url, concurrency=8, prefetch_count=64)
            subscriber.register(handle_async, name, ["order.*"], max_retries=2, **options)
            await subscriber.declare()
            journal.write(f"{os.getpid()} ready\n")
            await subscriber.run()

        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
