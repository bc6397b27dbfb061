"""Replaying dead-lettered events back to their subscriber, and only to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain_event_broker import (
    DISCARD,
    LEAVE,
    RETRY,
    DomainEvent,
    Subscriber,
    publish_domain_event,
    replay_all,
    replay_event,
)
from domain_event_broker.replay import replay_dead_letters
from support import consume_until, get_all, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def _dead_letter(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, count: int
) -> list[DomainEvent]:
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, name, [f"{name}.#"], dead_letter=True)
    sent = [
        publish_domain_event(f"{name}.x", {"n": n}, connection_settings=broker_url)
        for n in range(count)
    ]
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == count, settle=0.2)
    return sent


def test_replay_event_moves_one_event_back_and_returns_how_many_are_left(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    sent = _dead_letter(broker_url, name, make_subscriber, 2)
    assert replay_event(name, connection_settings=broker_url) == 1
    assert queue_depth(broker_url, name) == 1
    [(method, properties, body)] = get_all(broker_url, name)
    assert DomainEvent.from_json(body) == sent[0]
    assert method.routing_key == f"{name}.x"
    assert "x-domain-event-exception-type" not in properties.headers


def test_a_replayed_event_is_handled_afresh_by_its_subscriber(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    [sent] = _dead_letter(broker_url, name, make_subscriber, 1)
    assert replay_all(name, connection_settings=broker_url) == 0
    handled: list[DomainEvent] = []
    fixed = make_subscriber()
    fixed.register(handled.append, name, [f"{name}.#"], dead_letter=True, max_retries=2)
    consume_until(fixed, lambda: bool(handled), settle=0.2)
    assert handled == [sent]
    assert handled[0].retries == 0
    assert queue_depth(broker_url, f"{name}-dl") == 0


def test_replay_goes_to_that_subscriber_only(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    other: list[DomainEvent] = []
    bystander = make_subscriber()
    bystander.register(other.append, f"{name}-other", [f"{name}.#"])
    [sent] = _dead_letter(broker_url, name, make_subscriber, 1)
    consume_until(bystander, lambda: len(other) == 1)
    assert other == [sent]
    replay_event(name, connection_settings=broker_url)
    assert queue_depth(broker_url, name) == 1
    assert queue_depth(broker_url, f"{name}-other") == 0


def test_replay_all_ends_even_when_replayed_events_fail_again_at_once(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    _dead_letter(broker_url, name, make_subscriber, 5)
    failures: list[int] = []

    def still_broken(event: DomainEvent) -> None:
        failures.append(1)
        raise ValueError("still broken")

    broken = make_subscriber()
    broken.register(still_broken, name, [f"{name}.#"], dead_letter=True)
    import threading

    runner = threading.Thread(target=broken.start_consuming, kwargs={"timeout": 20})
    runner.start()
    try:
        left = replay_all(name, connection_settings=broker_url)
    finally:
        broken.stop_consuming()
        runner.join(30)
    assert 0 <= left <= 5
    assert queue_depth(broker_url, f"{name}-dl") == 5
    assert len(failures) == 5


def test_callback_decides_replay_discard_or_leave(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    _dead_letter(broker_url, name, make_subscriber, 3)
    seen: list[dict[str, Any]] = []
    decisions = {0: RETRY, 1: DISCARD, 2: LEAVE}

    def decide(frame: Any, header: Any, body: bytes) -> str:
        data = DomainEvent.from_json(body).data
        seen.append(
            {
                "routing_key": frame.routing_key,
                "subscriber": header.headers["x-domain-event-failed-subscriber"],
                "n": data["n"],
            }
        )
        return decisions[data["n"]]

    # 3.x's count: the events beside the last one taken (none), not what stays.
    assert replay_all(name, decide, connection_settings=broker_url) == 0
    assert [s["n"] for s in seen] == [0, 1, 2]
    assert all(s["subscriber"] == name for s in seen)
    assert [DomainEvent.from_json(b).data["n"] for _, _, b in get_all(broker_url, name)] == [0]
    assert [
        DomainEvent.from_json(b).data["n"] for _, _, b in get_all(broker_url, f"{name}-dl")
    ] == [2]


def test_events_left_earlier_in_the_run_are_counted_as_3x_counted_them(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    _dead_letter(broker_url, name, make_subscriber, 4)
    decisions = iter([RETRY, DISCARD, LEAVE, LEAVE])
    left = replay_all(name, lambda **kwargs: next(decisions), connection_settings=broker_url)
    # When the last event was taken, the one left before it was beside it (3.x had
    # put it back at once); the last one itself is not counted.
    assert left == 1
    assert queue_depth(broker_url, f"{name}-dl") == 2


def test_replay_dead_letters_counts_what_stays_in_the_dead_letter_queue(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    _dead_letter(broker_url, name, make_subscriber, 3)
    leave = lambda **kwargs: LEAVE  # noqa: E731
    assert replay_dead_letters(name, leave, broker_url) == 3
    assert replay_dead_letters(name, leave, broker_url, all_events=True) == 3
    assert replay_dead_letters(name, connection_settings=broker_url) == 2
    assert queue_depth(broker_url, f"{name}-dl") == 2


def test_an_unknown_decision_leaves_the_event_and_raises(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    _dead_letter(broker_url, name, make_subscriber, 1)
    with pytest.raises(ValueError, match="RETRY, DISCARD or LEAVE"):
        replay_event(name, lambda **kwargs: "maybe", connection_settings=broker_url)
    assert queue_depth(broker_url, f"{name}-dl") == 1


def test_replay_of_an_empty_dead_letter_queue_returns_zero(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber().register(print, name, [f"{name}.#"], dead_letter=True)
    assert replay_event(name, connection_settings=broker_url) == 0
    assert replay_all(name, connection_settings=broker_url) == 0


def test_replay_of_a_subscriber_without_dead_letter_queue_says_so(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    with pytest.raises(ValueError, match=f"there is no subscriber '{name}'"):
        replay_event(name, connection_settings=broker_url)  # nothing registered yet
    make_subscriber().register(print, name, [f"{name}.#"])  # dead_letter=False
    with pytest.raises(ValueError, match=r"has no dead-letter queue.*dead_letter=True"):
        replay_event(name, connection_settings=broker_url)


def test_replay_without_broker_is_a_no_op() -> None:
    assert replay_event("anything", connection_settings=None) == 0


@pytest.mark.parametrize(
    "foreign_headers",
    [
        {"x-domain-event-replayed": "abc", "x-domain-event-routing-key": ["not", "a", "key"]},
        {"x-domain-event-replayed": [1, 2], "x-domain-event-routing-key": "a" * 300},
    ],
)
def test_a_dead_letter_with_odd_headers_from_another_client_is_still_replayed(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, foreign_headers: dict[str, Any]
) -> None:
    import pika

    [sent] = _dead_letter(broker_url, name, make_subscriber, 1)
    # An operator's tool (or another library) rewrote the dead letter's headers.
    [(method, properties, body)] = get_all(broker_url, f"{name}-dl")
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            f"{name}-dl",
            body,
            pika.BasicProperties(headers={**(properties.headers or {}), **foreign_headers}),
        )
    assert replay_all(name, connection_settings=broker_url) == 0
    [(method, properties, body)] = get_all(broker_url, name)
    assert DomainEvent.from_json(body) == sent
    assert method.routing_key == sent.routing_key
    assert properties.headers["x-domain-event-replayed"] == 1
