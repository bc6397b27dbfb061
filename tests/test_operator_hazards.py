"""What operators do to a broker every week, through both drivers: each event ends by the rule.

Held back with a pause (no hot loop), one ERROR that names the cause and the fix,
the rest of the subscriber keeps working, and it recovers by itself once fixed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from domain_event_broker import DomainEvent, Retry, publish_domain_event
from domain_event_broker.replay import list_dead_letters
from drivers import Driver
from support import AMQP_PORT, delete_queues, rabbitmqctl

MakeDriver = Callable[..., Driver]


@pytest.fixture
def user_without_wait_queues(vhost: str, name: str) -> Iterator[str]:
    """A user whose configure permission was written for 3.x's queue names (no N-wait-*)."""
    user, password = f"deb-{uuid.uuid4().hex[:8]}", "limited-pw"
    rabbitmqctl("add_user", user, password)
    configure = f"^({name}(-dl|-dlx|-retry|-delay-.*)?|domain-events)$"
    rabbitmqctl("set_permissions", "-p", vhost, user, configure, ".*", ".*")
    try:
        yield f"amqp://{user}:{password}@127.0.0.1:{AMQP_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_user", user)


def test_a_retry_the_permissions_refuse_is_paused_logged_once_and_recovers_once_granted(
    vhost: str,
    name: str,
    broker_url: str,
    user_without_wait_queues: str,
    make_driver: MakeDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def handle(event: DomainEvent) -> None:
        with lock:
            calls.append((event.data["kind"], event.retries, time.monotonic()))
        if event.data["kind"] == "flaky" and event.retries == 0:
            raise Retry(1.0)

    def retried() -> list[tuple[str, int, float]]:
        with lock:
            return [call for call in calls if call[0] == "flaky"]

    subscriber = make_driver(user_without_wait_queues)
    subscriber.register(handle, name, [f"{name}.#"], max_retries=3)
    publish_domain_event(f"{name}.x", {"kind": "flaky"}, connection_settings=broker_url)
    user = user_without_wait_queues.split("//")[1].split(":")[0]
    granted: list[float] = []

    def others_handled_then_grant() -> bool:
        attempts = retried()
        if len(attempts) >= 1 and not granted and time.monotonic() - attempts[0][2] > 4:
            # Meanwhile the other events of the subscriber were handled at once.
            for n in range(3):
                publish_domain_event(
                    f"{name}.x", {"kind": "fine", "n": n}, connection_settings=broker_url
                )
            time.sleep(1.0)
            rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            granted.append(time.monotonic())
        return any(retries == 1 for _, retries, _ in retried())

    try:
        with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
            subscriber.run_until(others_handled_then_grant, timeout=60)
    finally:
        delete_queues(broker_url, f"{name}-wait-1000")
    attempts = retried()
    before_grant = [at for _, retries, at in attempts if retries == 0 and at < granted[0]]
    # Held back with a pause: at most about one redelivery a second, no hot loop.
    assert 2 <= len(before_grant) <= 6, before_grant
    assert [kind for kind, _, _ in calls].count("fine") == 3
    # Recovered by itself: the retry went through after the permission was granted.
    assert attempts[-1][1] == 1
    assert attempts[-1][2] - granted[0] < 30
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("domain_event_broker")
    ]
    assert len(errors) == 1, errors
    assert "ACCESS_REFUSED" in errors[0] or "permission" in errors[0]
    assert f"{name}-wait-1000" in errors[0]


@pytest.fixture
def user_with_the_documented_permissions(vhost: str, name: str) -> Iterator[str]:
    """A user with exactly the permissions docs/brokers.md gives for a subscriber."""
    user, password = f"deb-{uuid.uuid4().hex[:8]}", "documented-pw"
    rabbitmqctl("add_user", user, password)
    own = f"{name}(-.*)?"
    rabbitmqctl(
        "set_permissions", "-p", vhost, user,
        f"^({own}|domain-events)$", f"^({own}|amq\\.default)$", f"^({own}|domain-events)$",
    )  # fmt: skip
    try:
        yield f"amqp://{user}:{password}@127.0.0.1:{AMQP_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_user", user)


def test_the_documented_permissions_cover_retries_and_dead_letters(
    name: str,
    broker_url: str,
    user_with_the_documented_permissions: str,
    make_driver: MakeDriver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    def handle(event: DomainEvent) -> None:
        attempts.append(event.retries)
        if event.retries == 0:
            raise Retry(0.2)
        raise ValueError("still failing")

    subscriber = make_driver(user_with_the_documented_permissions)
    subscriber.register(handle, name, [f"{name}.#"], max_retries=1, dead_letter=True)
    sent = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    try:
        with caplog.at_level(logging.WARNING, logger="domain_event_broker"):
            subscriber.run_until(lambda: len(attempts) == 2, timeout=20, settle=0.5)
        assert attempts == [0, 1]
        [letter] = list_dead_letters(name, broker_url)
        assert letter.event is not None and letter.event.uuid_string == sent.uuid_string
        refusals = [r for r in caplog.records if "refused" in r.getMessage().lower()]
        assert refusals == []
    finally:
        delete_queues(broker_url, f"{name}-wait-200")
