"""Keeps one test's broker outage from failing every test after it.

Some tests stop the suite's broker on purpose (``stop_app``, then ``start_app`` in a
``finally``). If bringing it back fails (a slow start on a loaded machine), every
later test would fail with "connection refused" and hide the one that broke it.
Before each test that uses the broker, :func:`ensure_broker_answers` checks the AMQP
port (one TCP connect) and, when nothing answers, brings the broker back: its
application (``rabbitmqctl start_app``), or, when its VM is gone, the command in
``DEB_TEST_BROKER_START`` (``make test-rabbitmq4`` sets ``.ci/rabbitmq4 start``). What
it found and did is printed at the end of the run.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time

from support import AMQP_PORT, RABBITMQCTL

#: Starts the broker's VM when it is gone; empty: only its application is restarted.
BROKER_START = shlex.split(os.environ.get("DEB_TEST_BROKER_START", ""))
#: A restart already under way (a fault test's own) gets this long before we step in.
GRACE_SECONDS = 5.0
START_SECONDS = 120.0

#: One line per outage found: printed in the run's summary.
OUTAGES: list[str] = []
#: The session's vhost (conftest's ``vhost``): a node started afresh has lost it.
SESSION_VHOSTS: list[str] = []


def broker_answers(timeout: float = 1.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex(("127.0.0.1", AMQP_PORT)) == 0


def _wait_until_answers(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if broker_answers():
            return True
        time.sleep(0.2)
    return broker_answers()


def _run(command: list[str], timeout: float) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{shlex.join(command)}: {error}"
    output = (result.stdout + result.stderr).strip().splitlines()
    return f"{shlex.join(command)}: exit {result.returncode} {output[-1] if output else ''}"


def ensure_broker_answers(test: str) -> str | None:
    """``None`` when the broker answers (now or once restarted); else why it does not."""
    if _wait_until_answers(GRACE_SECONDS):  # returns at once when it answers
        return None
    steps = [_run([*RABBITMQCTL, "start_app"], START_SECONDS)]
    if not _wait_until_answers(10.0) and BROKER_START:
        steps.append(_run(BROKER_START, START_SECONDS + 60))
        for vhost in SESSION_VHOSTS:  # a fresh node: the session's vhost again
            steps.append(_run([*RABBITMQCTL, "add_vhost", vhost], 60))
            permissions = ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]
            steps.append(_run([*RABBITMQCTL, *permissions], 60))
    steps.append(_run([*RABBITMQCTL, "await_startup", "--timeout", "60"], 90))
    back = _wait_until_answers(30.0)
    OUTAGES.append(
        f"port {AMQP_PORT} did not answer before {test}; "
        f"{'brought back' if back else 'NOT brought back'}: {' | '.join(steps)}"
    )
    return None if back else OUTAGES[-1]
