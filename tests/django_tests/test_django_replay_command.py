"""manage.py replay_domain_event, via call_command and as a real subprocess."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from django.core.management import call_command

from django_tests.project import run_manage
from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from support import consume_until, get_all, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def dead_letter(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, count: int
) -> list[DomainEvent]:
    """``count`` events that failed in subscriber ``name`` and wait in ``<name>-dl``."""
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, name, [f"{name}.#"], dead_letter=True)
    sent = [publish_domain_event(f"{name}.x", {"n": n}) for n in range(count)]
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == count, settle=0.2)
    return sent


def replayed(broker_url: str, name: str) -> list[DomainEvent]:
    return [DomainEvent.from_json(body) for _m, _p, body in get_all(broker_url, name)]


def test_replays_one_event_and_says_how_many_are_left(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    sent = dead_letter(broker_url, name, make_subscriber, 2)
    out = io.StringIO()
    call_command("replay_domain_event", name, stdout=out)
    assert out.getvalue() == f"1 dead-lettered events remaining for {name}\n"
    assert replayed(broker_url, name) == sent[:1]


def test_all_replays_every_event_of_every_named_subscriber(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    first = dead_letter(broker_url, f"{name}-a", make_subscriber, 3)
    second = dead_letter(broker_url, f"{name}-b", make_subscriber, 1)
    out = io.StringIO()
    call_command("replay_domain_event", f"{name}-a", f"{name}-b", "--all", stdout=out)
    assert out.getvalue().splitlines() == [
        f"0 dead-lettered events remaining for {name}-a",
        f"0 dead-lettered events remaining for {name}-b",
    ]
    assert replayed(broker_url, f"{name}-a") == first
    assert replayed(broker_url, f"{name}-b") == second


def test_interactive_subprocess_replays_discards_and_leaves_on_timeout(
    broker_url: str, name: str, make_subscriber: MakeSubscriber, manage_env: dict[str, str]
) -> None:
    sent = dead_letter(broker_url, name, make_subscriber, 4)
    # Answers for the first three events; the fourth gets no answer in time.
    result = run_manage(
        manage_env,
        "replay_domain_event",
        name,
        "--all",
        "--interactive",
        "--answer-timeout",
        "1",
        stdin="r\nD\nleave\n",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("(R)eplay, (D)iscard or (L)eave?") == 4
    assert json.dumps(sent[0].event_data, indent=4, sort_keys=True) in out
    assert "Message is returned to worker queue." in out
    assert "Message has been discarded." in out
    assert "Message left in queue." in out
    assert "Timed out. Message left in queue." in out
    # As in 3.x: the count beside the last event taken (the one left before it).
    assert out.rstrip().endswith(f"1 dead-lettered events remaining for {name}")
    assert replayed(broker_url, name) == sent[:1]
    left = [DomainEvent.from_json(body) for _m, _p, body in get_all(broker_url, f"{name}-dl")]
    assert sorted(event.data["n"] for event in left) == [2, 3]
