"""Running the test project's management commands as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PASSED_ON = (
    "DEB_TEST_DB_NAME",
    "DEB_TEST_SQLITE_PATH",
    "DEB_TEST_PG_HOST",
    "DEB_TEST_PG_PORT",
    "DEB_TEST_PG_USER",
)


def project_env(broker_url: str) -> dict[str, str]:
    """Environment for ``python -m django ...``: the test project, database and vhost."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["DEB_TEST_BROKER_URL"] = broker_url
    for name in _PASSED_ON:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def manage(*args: str) -> list[str]:
    """The command line of ``manage.py <args>`` for the test project."""
    return [sys.executable, "-m", "django", *args]


def run_manage(
    env: dict[str, str], *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a management command to its end; return its exit status and output."""
    return subprocess.run(
        manage(*args),
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
