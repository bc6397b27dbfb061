"""What the outbox tests of Django and SQLAlchemy share: a queue that refuses, an odd payload."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pika

from support import delete_queues, get_all, rabbitmqctl

#: What the broker's max_message_size is lowered to while a test needs a small one.
LOWERED_MAX_MESSAGE_SIZE = 1024 * 1024


def refuses_size(broker_url: str, size: int) -> bool:
    """Whether a new channel of the broker refuses a message of ``size`` bytes."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish("", "no-such-queue", b"x" * size)
        except pika.exceptions.ChannelClosedByBroker as error:
            return error.reply_code == 406
        return False


@contextlib.contextmanager
def lowered_max_message_size(broker_url: str) -> Iterator[int]:
    """The broker's max_message_size while inside: lowered to 1 MiB where the node takes
    that at run time (3.x, for channels opened from now on), else what it is configured
    with (4.x: 16 MiB). Put back on the way out, whatever happened (``disrupts_broker``)."""
    before = rabbitmqctl("eval", "application:get_env(rabbit, max_message_size).").strip()
    configured = int(before.removeprefix("{ok,").removesuffix("}"))
    lowered = LOWERED_MAX_MESSAGE_SIZE
    rabbitmqctl("eval", f"application:set_env(rabbit, max_message_size, {lowered}).")
    try:
        yield lowered if refuses_size(broker_url, lowered + 1) else configured
    finally:
        rabbitmqctl("eval", f"application:set_env(rabbit, max_message_size, {configured}).")


def declare_refusing_queue(broker_url: str, queue: str, binding_key: str) -> None:
    """A queue that is always full and refuses what is routed to it (``reject-publish``).

    The broker then nacks every event with ``binding_key``: the event is refused.
    """
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(
            queue, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        channel.queue_bind(queue, "domain-events", routing_key=binding_key)


@contextlib.contextmanager
def watched_queues(broker_url: str, name: str) -> Iterator[str]:
    """A queue that sees every event ``<name>.#`` (each copy of each attempt), and one that
    refuses ``<name>.refused.#``; both deleted afterwards."""
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    declare_refusing_queue(broker_url, f"{name}-full", f"{name}.refused.#")
    try:
        yield name
    finally:
        delete_queues(broker_url, name, f"{name}-full")


def odd_payload(routing_key: str, n: int) -> tuple[str, str]:
    """``(uuid_string, payload)``: a stored body with a field the library does not know,
    non-default spacing and key order, and non-ASCII text, as another writer might store it."""
    uuid_string = str(uuid.uuid4())
    payload = (
        f'{{ "uuid_string":"{uuid_string}" ,"routing_key": "{routing_key}",\n  '
        f'"data": {{"n":{n}, "name": "Zoë ✓"}},"timestamp":1700000000.5,   '
        '"domain_object_id":null, "schema_version": 3 }'
    )
    json.loads(payload)  # still an event
    return uuid_string, payload


def arrivals(broker_url: str, queue: str) -> list[dict[str, Any]]:
    """Every event in ``queue`` (taken out), as JSON, in arrival order."""
    return [json.loads(body) for _m, _p, body in get_all(broker_url, queue)]


def relay_through_a_late_broker(
    relay: Any, caplog: Any, broker_url: str, queue: str, binding_key: str
) -> tuple[list[str], list[str]]:
    """Run ``relay`` (its URL names a vhost that does not exist yet) while the vhost appears.

    Returns the relay's WARNING and INFO lines about the outage once every row was sent.
    """
    import contextlib
    import logging
    import subprocess
    import threading
    import time
    from urllib.parse import unquote, urlsplit

    from support import rabbitmqctl

    vhost = unquote(urlsplit(broker_url).path[1:])
    caplog.set_level(logging.DEBUG, "domain_event_broker.outbox.relay")

    def run() -> None:
        try:
            relay.run(timeout=60)
        finally:
            relay.close()  # on its own thread: its database connection is this thread's

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        time.sleep(2.0)  # several failed attempts, with backoff
        assert relay.store.count_pending() > 0
        rabbitmqctl("add_vhost", vhost)
        # The queue must be bound before the relay (user guest) can reach the vhost:
        # an event it published before would be unroutable, and dropped by design.
        # So a user of the test's own sets the vhost up first.
        setup_user = f"setup-{queue}"
        rabbitmqctl("add_user", setup_user, "setup-password")
        try:
            rabbitmqctl("set_permissions", "-p", vhost, setup_user, ".*", ".*", ".*")
            setup_url = broker_url.replace("guest:guest@", f"{setup_user}:setup-password@", 1)
            with pika.BlockingConnection(pika.URLParameters(setup_url)) as connection:
                channel = connection.channel()
                channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
                channel.queue_declare(queue, durable=True)
                channel.queue_bind(queue, "domain-events", routing_key=binding_key)
        finally:
            rabbitmqctl("delete_user", setup_user)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        deadline = time.monotonic() + 30
        while relay.store.count_pending():
            assert time.monotonic() < deadline, "rows not relayed after the broker came"
            time.sleep(0.1)
        relay.stop()
        thread.join(30)
        with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
            depth = connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        relay.stop()
        thread.join(30)
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("delete_vhost", vhost)
    records = [r for r in caplog.records if r.name == "domain_event_broker.outbox.relay"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if "working again" in r.getMessage()]
    assert relay.stats.failed_attempts >= 2
    assert depth == 3, "each row sent once"
    return warnings, infos
