"""SIGTERM at any moment stops a relay that polls an empty outbox: never a deadlock."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Rounds: each a relay started afresh in the same process and stopped by one SIGTERM.
ROUNDS = 200
#: Seconds a relay may take to stop after SIGTERM (its grace: the batch in flight).
GRACE = 5.0

#: Runs relays one after another on the main thread, as ``domain-events-relay`` does,
#: each polling an empty outbox without pause until a SIGTERM stops it: as much of
#: its time as can be spent in its wait (where an ``Event.set()`` in the handler
#: deadlocked: the signal can land while ``Event.wait()`` holds its lock).
CHILD = """
import sys
from domain_event_broker.outbox import OutboxRelay, stop_on_signals
from domain_event_broker.sqlalchemy import SQLAlchemyOutboxStore, metadata

database_url, broker_url, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SQLAlchemyOutboxStore(database_url)
metadata.create_all(store.engine)
for number in range(rounds):
    relay = OutboxRelay(store, broker_url, poll_interval=0.0, retention=None)
    restore = stop_on_signals(relay)
    print("running", number, flush=True)
    relay.run()
    restore()
    relay.close()
    print("stopped", number, flush=True)
"""


class Lines:
    """The child's output line by line, each waited for up to a timeout (no buffered
    reader: one that took two lines at once would hide the second from select)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next(self, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def test_sigterm_at_random_moments_always_stops_the_relay_within_its_grace(
    tmp_path: Path, broker_url: str
) -> None:
    # An SQLite outbox: its empty poll is the quickest, so the wait is the most of the loop.
    database_url = f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, database_url, broker_url, str(ROUNDS)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    lines = Lines(process.stdout.fileno())
    slowest = 0.0
    try:
        for number in range(ROUNDS):
            assert lines.next(30) == f"running {number}"
            time.sleep(random.uniform(0, 0.03))  # anywhere in the poll loop
            os.kill(process.pid, signal.SIGTERM)
            sent = time.monotonic()
            line = lines.next(GRACE)
            assert line == f"stopped {number}", f"round {number}: no stop within {GRACE} s"
            slowest = max(slowest, time.monotonic() - sent)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"slowest stop after SIGTERM: {slowest:.3f} s")
