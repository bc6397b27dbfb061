"""A subscriber in a process of its own, as a deployed worker runs, for the fault tests.

Usage: python subscriber_process.py URL NAME HANDLER_SECONDS JOURNAL

Writes ``start <uuid>`` and ``done <uuid>`` lines to JOURNAL (flushed at once),
so the test can see what happened even after a SIGKILL.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from domain_event_broker import DomainEvent, Subscriber


def main() -> int:
    url, name, seconds, journal_path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.INFO, format=f"[{os.getpid()}] %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    journal = open(journal_path, "a", buffering=1)  # noqa: SIM115 - open for the process' life

    def handle(event: DomainEvent) -> None:
        journal.write(f"start {event.uuid_string} {os.getpid()}\n")
        time.sleep(seconds)
        journal.write(f"done {event.uuid_string} {os.getpid()}\n")

    subscriber = Subscriber(url, shutdown_grace_period=20)
    subscriber.register(handle, name, [f"{name}.#"])
    journal.write(f"ready - {os.getpid()}\n")
    subscriber.start_consuming()
    journal.write(f"stopped - {os.getpid()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
