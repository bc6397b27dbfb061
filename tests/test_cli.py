"""The domain-events command, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pika

from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from support import consume_until, get_all, queue_depth, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]


def domain_events(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "domain_event_broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_demo_runs_the_whole_story_and_cleans_up(broker_url: str, vhost: str) -> None:
    started = time.monotonic()
    result = domain_events("--url", broker_url, "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    out = result.stdout
    assert "Retry(0.5)" in out and "Retry(1.0)" in out
    assert "raises ValueError" in out
    assert "dead letter: {'order_id': 4" in out
    assert "Done: 4 orders published, 4 mails sent, 2 delayed retries" in out
    assert "guest:***@" in out and "guest:guest@" not in out
    assert "demo-order-mailer" not in rabbitmqctl("list_queues", "-q", "-p", vhost, "name")


def test_demo_against_an_unreachable_broker_says_so() -> None:
    result = domain_events("--url", "amqp://guest:pw@127.0.0.1:5999/%2F", "demo")
    assert result.returncode == 1
    assert "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:5999/%2F" in result.stdout
    assert ":pw@" not in result.stdout + result.stderr


def test_publish_then_listen(broker_url: str, name: str) -> None:
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "domain_event_broker.cli",
            "--url",
            broker_url,
            "listen",
            f"{name}.*",
            "--count",
            "1",
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listener.stderr is not None
    assert "listening on" in listener.stderr.readline()  # its queue is bound now
    published = domain_events("--url", broker_url, "publish", f"{name}.registered", '{"id": 7}')
    assert published.returncode == 0, published.stderr
    sent = json.loads(published.stdout)
    out, _ = listener.communicate(timeout=30)
    assert listener.returncode == 0
    assert json.loads(out) == sent
    assert sent["data"] == {"id": 7}


def test_publish_refuses_bad_input_with_a_clear_message(broker_url: str) -> None:
    result = domain_events("--url", broker_url, "publish", "user.*", "{}")
    assert result.returncode == 2
    assert "wildcard" in result.stderr
    result = domain_events("--url", broker_url, "publish", "user.registered", "{not json")
    assert result.returncode == 2
    assert "must be JSON" in result.stderr


def test_status_and_dead_letters_list_replay_discard(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, name, [f"{name}.#"], dead_letter=True)
    for n in range(3):
        publish_domain_event(f"{name}.x", {"n": n}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 3, settle=0.2)

    status = domain_events("--url", broker_url, "status", name)
    assert status.returncode == 0
    [row] = [line.split() for line in status.stdout.splitlines() if line.startswith(name)]
    assert row == [name, "0", "0", "3"]
    missing = domain_events("--url", broker_url, "status", f"{name}-nobody")
    assert missing.returncode == 1 and "no such queue" in missing.stdout

    listing = domain_events("--url", broker_url, "dead-letters", "list", name, "--json")
    records = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [r["event"]["data"]["n"] for r in records] == [0, 1, 2]
    assert all(r["exception"].startswith("ZeroDivisionError") for r in records)
    assert queue_depth(broker_url, f"{name}-dl") == 3, "list must not remove anything"

    replayed = domain_events("--url", broker_url, "dead-letters", "replay", name)
    assert replayed.stdout.strip() == (
        f"{name}: 1 replayed, 0 discarded, 0 left; 2 dead-lettered events remaining"
    )
    assert queue_depth(broker_url, name) == 1
    discarded = domain_events("--url", broker_url, "dead-letters", "discard", name, "--all")
    assert discarded.stdout.strip() == (
        f"{name}: 0 replayed, 2 discarded, 0 left; 0 dead-lettered events remaining"
    )
    assert queue_depth(broker_url, f"{name}-dl") == 0


def test_interactive_replay_asks_and_leaves_the_event_without_an_answer(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, name, [f"{name}.#"], dead_letter=True)
    for n in range(3):
        publish_domain_event(f"{name}.x", {"n": n}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-dl") == 3, settle=0.2)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "domain_event_broker.cli",
            "--url",
            broker_url,
            "dead-letters",
            "replay",
            name,
            "--all",
            "--interactive",
        ],
        input="r\nd\n",  # replay the first, discard the second, then end of input
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(R)eplay, (D)iscard or (L)eave?") == 3
    assert '"n": 0' in result.stdout  # shown as indented JSON
    assert "ZeroDivisionError" in result.stdout
    assert "1 dead-lettered events remaining" in result.stdout
    [(_, _, body)] = get_all(broker_url, name)
    assert DomainEvent.from_json(body).data == {"n": 0}
    assert queue_depth(broker_url, f"{name}-dl") == 1


def test_a_misplaced_url_option_is_refused_without_showing_its_password() -> None:
    # argparse echoes what it could not use: a stray URL.
    executable = os.path.join(os.path.dirname(sys.executable), "domain-events-relay")
    result = subprocess.run(
        [executable, "--database-url", "sqlite://", "amqp://app:Pa55word-x@rabbit/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr
    assert "app:***@rabbit" in result.stderr
    assert "Pa55" not in result.stderr + result.stdout


def test_global_options_go_before_or_after_the_command(broker_url: str, name: str) -> None:
    for args in (
        ["--url", broker_url, "status", name, "--json"],
        ["status", name, "--url", broker_url, "--json"],
        ["dead-letters", "list", name, "--url", broker_url],
    ):
        result = domain_events(*args)
        assert "unrecognized arguments" not in result.stderr, args
    # The URL after the command counts: a wrong password there is what fails.
    wrong = broker_url.replace("guest:guest@", "guest:Wr0ng-pw@")
    result = domain_events("--url", broker_url, "status", name, "--url", wrong)
    assert result.returncode == 1
    assert "refused the user name or password" in result.stderr
    assert "Wr0ng" not in result.stderr + result.stdout


def test_v_shows_our_debug_lines_and_vv_adds_pikas(broker_url: str, name: str) -> None:
    listen = ("--url", broker_url, "listen", f"{name}.#", "--timeout", "0.5")
    quiet, once, twice = (
        domain_events(*listen),
        domain_events(*listen, "-v"),
        domain_events(*listen, "-vv"),
    )
    assert quiet.returncode == once.returncode == twice.returncode == 0, once.stderr
    assert "domain_event_broker" not in quiet.stderr
    assert "INFO domain_event_broker.subscriber" in once.stderr
    assert "connected to RabbitMQ" in once.stderr
    assert "pika" not in once.stderr
    assert "DEBUG pika" in twice.stderr


def test_a_subscriber_that_does_not_exist_is_named_as_such(broker_url: str, name: str) -> None:
    result = domain_events("--url", broker_url, "dead-letters", "list", f"{name}-nobody")
    assert result.returncode == 2
    assert f"there is no subscriber '{name}-nobody' on this broker" in result.stderr
    assert "dead_letter=True" not in result.stderr


def test_subscribers_lists_them_and_delete_removes_one_after_asking(
    broker_url: str, vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # What experiments leave behind: durable queues that go on collecting events.
    subscriber = make_subscriber()
    subscriber.register(lambda e: 1 / 0, f"{name}-a", [f"{name}.a.*"], dead_letter=True)
    subscriber.register(print, f"{name}-b", [f"{name}.#"])
    publish_domain_event(f"{name}.a.x", {}, connection_settings=broker_url)
    consume_until(subscriber, lambda: queue_depth(broker_url, f"{name}-a-dl") == 1, settle=0.2)
    publish_domain_event(f"{name}.a.y", {}, connection_settings=broker_url)  # waits in both

    listing = domain_events("--url", broker_url, "subscribers", "--json")
    assert listing.returncode == 0, listing.stderr
    found = {row["name"]: row for row in json.loads(listing.stdout)}
    assert found[f"{name}-a"]["binding_keys"] == [f"{name}.a.*"]
    assert (found[f"{name}-a"]["waiting"], found[f"{name}-a"]["dead_letters"]) == (1, 1)
    assert found[f"{name}-b"]["dead_letters"] is None
    assert found[f"{name}-b"]["waiting"] == 1  # it handled the first while consuming
    table = domain_events("--url", broker_url, "status")  # no names: every subscriber
    assert any(line.split()[0] == f"{name}-a" for line in table.stdout.splitlines()[1:])

    # Not deleted without the name typed back.
    kept = domain_events("--url", broker_url, "delete", f"{name}-a")
    assert kept.returncode == 1 and "not deleted" in kept.stdout
    assert "2 events in them are lost" in kept.stdout
    assert queue_depth(broker_url, f"{name}-a") == 1
    deleted = domain_events("--url", broker_url, "delete", f"{name}-a", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted subscriber {name}-a: 2 events removed" in deleted.stdout
    queues = rabbitmqctl("list_queues", "-p", vhost, "name", "-q").split()
    exchanges = rabbitmqctl("list_exchanges", "-p", vhost, "name", "-q").split()
    assert not [queue for queue in queues if queue.startswith(f"{name}-a")]
    assert not [exchange for exchange in exchanges if exchange.startswith(f"{name}-a")]
    assert f"{name}-b" in queues  # the other one stays


def test_delete_refuses_a_subscriber_with_consumers_unless_forced(
    broker_url: str, name: str
) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", f"{name}.#")
        channel.basic_consume(name, lambda *_: None)  # a subscriber still running
        refused = domain_events("--url", broker_url, "delete", name, "--yes")
        assert refused.returncode == 2
        assert "has 1 consumer(s): stop them first" in refused.stderr
        forced = domain_events("--url", broker_url, "delete", name, "--yes", "--force")
        assert forced.returncode == 0, forced.stderr
    missing = domain_events("--url", broker_url, "delete", name, "--yes")
    assert missing.returncode == 2 and f"there is no subscriber '{name}'" in missing.stderr


def test_subscribers_lists_them_while_another_connection_holds_an_exclusive_queue(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # `domain-events listen` (or the console) holds one: a passive declare of it is refused.
    make_subscriber().register(print, name, [f"{name}.#"])
    listener = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = listener.channel()
        queue = channel.queue_declare(f"{name}-listening", exclusive=True).method.queue
        channel.queue_bind(queue, "domain-events", f"{name}.#")
        listing = domain_events("--url", broker_url, "subscribers", "--json")
        assert listing.returncode == 0, listing.stderr
        found = {row["name"]: row for row in json.loads(listing.stdout)}
        assert found[name]["waiting"] == 0
        assert f"{name}-listening" in found, "listed with the management API's figures"
    finally:
        listener.close()
