"""examples/django_project works as its README says, against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
HANDLER = "shop-confirmation-mailer"


@pytest.fixture
def example_env(broker_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
    }
    env.update(DOMAIN_EVENT_BROKER=broker_url, EXAMPLE_SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    yield env
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in (HANDLER, f"{HANDLER}-dl"):
            channel.queue_delete(queue)
        for exchange in (f"{HANDLER}-dlx", f"{HANDLER}-retry"):
            channel.exchange_delete(exchange)


def manage_py(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_steps(example_env: dict[str, str]) -> None:
    manage_py(example_env, "migrate")
    manage_py(example_env, "consume_domain_events", "--timeout", "0.5")
    assert manage_py(example_env, "place_orders", "3").count("placed order-") == 3
    assert manage_py(example_env, "mail_report").strip() == (
        "3 orders, 0 mails, 3 outbox rows pending"
    )
    assert "relayed 3 events" in manage_py(example_env, "relay_domain_events", "--once")
    consumed = manage_py(example_env, "consume_domain_events", "--timeout", "2")
    assert consumed.count("mail sent for order order-") == 3
    assert manage_py(example_env, "mail_report").strip() == (
        "3 orders, 3 mails, 0 outbox rows pending"
    )
