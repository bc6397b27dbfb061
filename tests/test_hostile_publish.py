"""Inputs a caller may hand the publisher that must neither hang it nor kill its I/O thread."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from domain_event_broker import Publisher, PublishError
from domain_event_broker.messages import OutgoingMessage
from domain_event_broker.observability import add_header_injector
from support import delete_queues, get_all

#: Short, so that a publish stuck behind a dead I/O thread fails the test quickly.
TIMEOUT = 5.0


@pytest.fixture
def queue(broker_url: str, name: str) -> Iterator[str]:
    """A queue bound to the events exchange with ``<name>.#``, deleted afterwards."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    try:
        yield name
    finally:
        delete_queues(broker_url, name)


@pytest.fixture
def publisher(broker_url: str) -> Iterator[Publisher]:
    publisher = Publisher(broker_url, publish_timeout=TIMEOUT)
    try:
        yield publisher
    finally:
        publisher.disconnect()


def bodies(broker_url: str, queue: str) -> list[bytes]:
    return [body for _method, _properties, body in get_all(broker_url, queue)]


@pytest.mark.parametrize("body_type", [bytearray, memoryview])
def test_a_bytes_like_body_is_published(
    broker_url: str, queue: str, publisher: Publisher, body_type: Any
) -> None:
    publisher.publish(body_type(b'{"n": 1}'), f"{queue}.happened")
    assert bodies(broker_url, queue) == [b'{"n": 1}']


@pytest.mark.parametrize("body", [{"n": 1}, 7, None], ids=["dict", "int", "None"])
def test_a_body_of_another_type_is_a_type_error_at_the_call(
    broker_url: str, queue: str, publisher: Publisher, body: Any
) -> None:
    started = time.monotonic()
    with pytest.raises(TypeError, match=type(body).__name__):
        publisher.publish(body, f"{queue}.happened")
    assert time.monotonic() - started < 1.0
    # Nothing was sent, and the publisher works on.
    publisher.publish("{}", f"{queue}.after")
    assert bodies(broker_url, queue) == [b"{}"]


def test_properties_that_cannot_be_encoded_are_a_type_error_at_the_call(
    broker_url: str, queue: str, publisher: Publisher
) -> None:
    bad = pika.BasicProperties(headers={"x-thing": object()})
    started = time.monotonic()
    with pytest.raises(TypeError, match="cannot be encoded"):
        publisher.publish("{}", f"{queue}.happened", properties=bad)
    assert time.monotonic() - started < 1.0
    publisher.publish("{}", f"{queue}.after")
    assert bodies(broker_url, queue) == [b"{}"]


def test_a_message_that_cannot_be_sent_fails_alone_and_at_once(
    broker_url: str, queue: str, publisher: Publisher
) -> None:
    # Headers are encoded on the I/O thread: a bad value there fails its own message
    # with a clear error, the others of the batch are confirmed, the thread lives on.
    bad = OutgoingMessage(f"{queue}.bad", b'{"n": 1}', "bad", headers={"x-thing": object()})
    good = OutgoingMessage(f"{queue}.good", b'{"n": 2}', "good")
    started = time.monotonic()
    outcomes = publisher.publish_batch([bad, good, good])
    assert time.monotonic() - started < TIMEOUT / 2
    assert [outcome.confirmed for outcome in outcomes] == [False, True, True]
    error = str(outcomes[0].error)
    assert f"cannot send an event for '{queue}.bad'" in error
    assert "lost the connection" not in error
    assert bodies(broker_url, queue) == [b'{"n": 2}', b'{"n": 2}']
    publisher.publish("{}", f"{queue}.after")
    assert bodies(broker_url, queue) == [b"{}"]


def test_a_header_injector_returning_a_bad_value_fails_the_publish_clearly(
    broker_url: str, queue: str, publisher: Publisher
) -> None:
    remove = add_header_injector(lambda routing_key, message_id: {"x-bad": object()})
    try:
        started = time.monotonic()
        with pytest.raises(PublishError, match="cannot send an event"):
            publisher.publish("{}", f"{queue}.happened")
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        remove()
    publisher.publish("{}", f"{queue}.after")
    assert bodies(broker_url, queue) == [b"{}"]


def test_a_child_forked_while_a_thread_held_the_publisher_lock_publishes(
    broker_url: str, queue: str, publisher: Publisher
) -> None:
    # A parent thread connecting holds the lock at the moment of the fork: the child
    # inherits it held, with no thread left to release it.
    publisher.publish("{}", f"{queue}.parent")
    with publisher._lock:
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                publisher.publish('{"from": "child"}', f"{queue}.child")
                code = 0
            finally:
                os._exit(code)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the publisher's lock")
    assert os.waitstatus_to_exitcode(status) == 0
    assert bodies(broker_url, queue) == [b"{}", b'{"from": "child"}']
    publisher.publish("{}", f"{queue}.parent")  # the parent's connection is untouched


def test_properties_reused_by_the_caller_get_fresh_injected_headers(
    broker_url: str, queue: str, publisher: Publisher
) -> None:
    calls = iter(["first", "second"])
    remove = add_header_injector(lambda routing_key, message_id: {"x-trace": next(calls)})
    properties = pika.BasicProperties(content_type="application/json", headers={"x-own": "v"})
    try:
        publisher.publish("{}", f"{queue}.one", properties=properties)
        publisher.publish("{}", f"{queue}.two", properties=properties)
    finally:
        remove()
    assert properties.headers == {"x-own": "v"}
    received = [props.headers for _method, props, _body in get_all(broker_url, queue)]
    assert received == [{"x-trace": "first", "x-own": "v"}, {"x-trace": "second", "x-own": "v"}]
