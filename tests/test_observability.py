"""Metrics hooks: what happened to each event, counted as a user's dashboard would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from domain_event_broker import DomainEvent, Retry, Subscriber, publish_domain_event
from domain_event_broker.observability import Metrics, Occurrence, add_listener
from support import consume_until, queue_depth

MakeSubscriber = Callable[..., Subscriber]


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    metrics = Metrics()
    remove = add_listener(metrics)
    yield metrics
    remove()


def test_published_handled_retried_and_dead_lettered_are_counted(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, metrics: Metrics
) -> None:
    def handler(event: DomainEvent) -> None:
        if event.data["kind"] == "slow":
            time.sleep(0.2)
        elif event.data["kind"] == "flaky" and event.retries == 0:
            raise Retry(0.1)
        elif event.data["kind"] == "broken":
            raise RuntimeError("bug")

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.#"], dead_letter=True, max_retries=2)
    for kind in ("slow", "flaky", "broken"):
        publish_domain_event(f"{name}.{kind}", {"kind": kind}, connection_settings=broker_url)
    consume_until(
        subscriber,
        lambda: (
            metrics.count("handled", subscriber=name) == 2
            and queue_depth(broker_url, f"{name}-dl") == 1
        ),
        settle=0.2,
    )
    assert metrics.count("published", routing_key=f"{name}.slow") == 1
    assert metrics.count("retried", subscriber=name) == 1
    assert metrics.count("handled", subscriber=name, routing_key=f"{name}.flaky") == 1
    assert metrics.count("dead_lettered", subscriber=name) == 1
    assert metrics.handler_seconds(name) >= 0.2
    text = metrics.prometheus_text()
    assert (
        f'domain_events_total{{kind="retried",subscriber="{name}",routing_key="{name}.flaky"}} 1'
        in text
    )
    assert f'domain_event_handler_seconds_total{{subscriber="{name}"}}' in text


def test_a_failing_listener_does_not_break_publishing(broker_url: str, name: str) -> None:
    seen: list[Occurrence] = []

    def broken_listener(occurrence: Occurrence) -> None:
        seen.append(occurrence)
        raise ValueError("listener bug")

    remove = add_listener(broken_listener)
    try:
        event = publish_domain_event(f"{name}.x", {}, connection_settings=broker_url)
    finally:
        remove()
    assert [(o.kind, o.event_id) for o in seen] == [("published", event.uuid_string)]


def test_published_says_how_long_the_confirm_took(broker_url: str, name: str) -> None:
    seen: list[Occurrence] = []
    remove = add_listener(seen.append)
    started = time.monotonic()
    try:
        publish_domain_event(f"{name}.timed", {}, connection_settings=broker_url)
    finally:
        remove()
    elapsed = time.monotonic() - started
    (published,) = [o for o in seen if o.kind == "published"]
    assert published.seconds is not None
    assert 0 < published.seconds <= elapsed
