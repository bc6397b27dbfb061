"""Connection errors on the real broker: malformed URLs and refused logins never show a password.

Every way in (publish_domain_event, Publisher, Subscriber, replay, status, the
CLI) is tried; the exception text, every log line (pika's too, at DEBUG) and
the command's output must hold no substring of 4+ characters of the password.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from domain_event_broker import (
    BrokerUnavailable,
    Publisher,
    Subscriber,
    publish_domain_event,
    replay_event,
)
from domain_event_broker.status import subscriber_status

# URLs that cannot be read as they stand; SECRET is spliced into the password.
MALFORMED = [
    "amqp://guest:pa/ss{secret}@127.0.0.1:5672/%2F",
    "guest:{secret}@127.0.0.1:5672/%2F",  # no scheme
    "amqp://guest:pa#ss{secret}@127.0.0.1:5672/%2F",
    "amqp://guest:pa?ss{secret}@127.0.0.1:5672/%2F",
    "amqp://guest:{secret},amqp://guest:{secret}@127.0.0.1:5672/%2F",
    "amqp://guest:{secret}@127.0.0.1:5672/%2F?no_such_option=1",
]
SECRET = "Xq7-Zk9-Wv3"


def leaked(password: str, text: str) -> list[str]:
    return [password[i : i + 4] for i in range(len(password) - 3) if password[i : i + 4] in text]


def entry_points(url: str) -> list[Callable[[], Any]]:
    return [
        lambda: publish_domain_event("conn.error", {}, connection_settings=url),
        lambda: Publisher(url),
        lambda: start_a_subscriber(url),
        lambda: replay_event("conn-error", connection_settings=url),
        lambda: subscriber_status("conn-error", url),
    ]


def start_a_subscriber(url: str) -> None:
    subscriber = Subscriber(url, handle_signals=False)
    subscriber.register(lambda event: None, "conn-error", ["conn.error"], auto_delete=True)
    subscriber.start_consuming(timeout=3)


def assert_nothing_leaks(
    url: str, expected: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # pika's logs too
    for attempt in entry_points(url):
        with pytest.raises(expected) as raised:
            attempt()
        assert not leaked(SECRET, str(raised.value)), str(raised.value)
        assert not leaked(SECRET, repr(raised.value)), repr(raised.value)
    assert not leaked(SECRET, caplog.text), caplog.text
    result = subprocess.run(
        [sys.executable, "-m", "domain_event_broker.cli", "-v", "--url", url, "status", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (1, 2)
    assert "error:" in result.stderr
    assert not leaked(SECRET, result.stdout + result.stderr), result.stderr


@pytest.mark.parametrize("template", MALFORMED)
def test_a_malformed_url_is_reported_without_its_password(
    template: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert_nothing_leaks(template.format(secret=SECRET), ValueError, caplog)


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{quote(SECRET + '/#?,@:', safe='')}@127.0.0.1:5672/%2F",
        f"amqp://guest:pa:ss@{SECRET}@127.0.0.1:5672/%2F",  # read whole, up to the last '@'
        f"amqp://guest:{SECRET}@127.0.0.1:5672/%2F, amqp://guest:{SECRET}@127.0.0.1:5672/%2F",
    ],
)
def test_a_refused_password_is_reported_without_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert_nothing_leaks(url, BrokerUnavailable, caplog)
    with pytest.raises(BrokerUnavailable, match="refused the user name or password"):
        Publisher(url)
