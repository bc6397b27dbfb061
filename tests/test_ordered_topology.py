"""What an ordered subscriber declares on the broker, and the errors of a topology that cannot be.

Through each driver: the hash exchange bound from the events exchange, the
single-active-consumer partitions, the one dead-letter queue; another partition
count than the live one is refused naming both; a broker without the hashing
plugin (a throwaway node on 127.0.0.1:5700) is refused naming the command.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from domain_event_broker import DomainEvent, PluginMissing, Publisher, Subscriber, TopologyMismatch
from domain_event_broker.aio import AsyncSubscriber
from domain_event_broker.core.topology import OBJECT_ID_HEADER
from drivers import Driver
from support import AMQP_PORT

MANAGEMENT_PORT = AMQP_PORT + 10000
#: The throwaway node of this module (distribution on 25700); no plugins enabled.
PLAIN_NODE_PORT = 5700


def management(vhost: str, path: str) -> Any:
    token = base64.b64encode(b"guest:guest").decode()
    quoted = urllib.parse.quote(vhost, safe="")
    request = urllib.request.Request(
        f"http://127.0.0.1:{MANAGEMENT_PORT}/api/{path.format(vhost=quoted)}",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def test_the_partitions_are_declared_as_the_design_says(
    make_driver: Callable[..., Driver], vhost: str, name: str
) -> None:
    driver = make_driver()
    driver.register(
        lambda event: None,
        name,
        ["order.*", "invoice.paid"],
        ordered_by="domain_object_id",
        partitions=3,
        dead_letter=True,
    )
    exchange = management(vhost, f"exchanges/{{vhost}}/{name}-partitions")
    assert exchange["type"] == "x-consistent-hash"
    assert exchange["durable"] is True
    assert exchange["arguments"] == {"hash-header": OBJECT_ID_HEADER}
    bindings = management(vhost, f"exchanges/{{vhost}}/{name}-partitions/bindings/destination")
    # From the events exchange, and from N-retry (where replayed dead letters come back).
    assert sorted((binding["source"], binding["routing_key"]) for binding in bindings) == [
        ("domain-events", "invoice.paid"),
        ("domain-events", "order.*"),
        (f"{name}-retry", "invoice.paid"),
        (f"{name}-retry", "order.*"),
    ]
    for index in range(3):
        queue = management(vhost, f"queues/{{vhost}}/{name}-p{index:03d}")
        assert queue["durable"] is True
        assert queue["arguments"]["x-single-active-consumer"] is True
        assert queue["arguments"]["x-dead-letter-exchange"] == f"{name}-dlx"
    queues = {row["name"] for row in management(vhost, "queues/{vhost}")}
    assert {q for q in queues if q.startswith(name)} == {
        f"{name}-p000",
        f"{name}-p001",
        f"{name}-p002",
        f"{name}-dl",
    }  # no queue N, no wait queues: retries are held in the process


def test_another_partition_count_than_the_live_one_is_refused_naming_both(
    make_driver: Callable[..., Driver], name: str
) -> None:
    make_driver().register(
        lambda event: None, name, ["order.*"], ordered_by="domain_object_id", partitions=4
    )
    for other in (2, 8):
        with pytest.raises(TopologyMismatch) as raised:
            make_driver().register(
                lambda event: None,
                name,
                ["order.*"],
                ordered_by="domain_object_id",
                partitions=other,
            )
        words = str(raised.value)
        assert f"partitions={other}" in words and "has 4 partitions" in words
        assert "register with partitions=4" in words
    # The same count again is fine (a second process of the same subscriber).
    make_driver().register(
        lambda event: None, name, ["order.*"], ordered_by="domain_object_id", partitions=4
    )


@pytest.fixture(scope="module")
def plain_node() -> Any:
    """A RabbitMQ node without the consistent-hash plugin."""
    if os.environ.get("DEB_TEST_AMQP_PORT", "5672") != "5672":
        pytest.skip("the throwaway node runs once, with the 3.x suite")
    from faults.rabbit_cluster import throwaway_node

    with throwaway_node("deb-ordered", PLAIN_NODE_PORT) as cluster:
        yield cluster.nodes[0].url


@pytest.mark.cluster
def test_without_the_plugin_register_says_how_to_enable_it_sync(plain_node: str) -> None:
    subscriber = Subscriber(plain_node, handle_signals=False)
    try:
        with pytest.raises(
            PluginMissing, match="rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"
        ):
            subscriber.register(
                lambda event: None,
                "shipping",
                ["order.*"],
                ordered_by="domain_object_id",
                partitions=4,
            )
        # The plain subscriber on the same broker still works.
        subscriber.register(lambda event: None, "mailer", ["user.*"])
    finally:
        subscriber.disconnect()


@pytest.mark.cluster
def test_without_the_plugin_run_says_how_to_enable_it_asyncio(plain_node: str) -> None:
    async def run() -> None:
        subscriber = AsyncSubscriber(plain_node, handle_signals=False)

        async def handler(event: object) -> None:
            pass

        subscriber.register(
            handler, "shipping", ["order.*"], ordered_by="domain_object_id", partitions=4
        )
        with pytest.raises(
            PluginMissing, match="rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"
        ):
            await asyncio.wait_for(subscriber.run(), 30)

    asyncio.run(run())


def domain_events(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "domain_event_broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_status_shows_each_partition_its_depth_and_the_active_connection(
    make_subscriber: Callable[..., Subscriber], broker_url: str, name: str
) -> None:
    subscriber = make_subscriber()
    subscriber.register(
        lambda event: None, name, ["order.*"], ordered_by="domain_object_id", partitions=2
    )
    publisher = Publisher(broker_url)
    for n in range(3):
        publisher.publish_event(DomainEvent("order.paid", {"n": n}, domain_object_id=n))
    publisher.disconnect()
    summary = domain_events("--url", broker_url, "status", name).splitlines()
    [row] = [line.split() for line in summary if line.startswith(name + " ")]
    assert row[1:3] == ["3", "0"]  # waiting in all partitions, no consumer yet
    assert f"{name}: 2 partitions (ordered by domain_object_id)" in summary
    assert [line.split()[0] for line in summary if line.startswith(f"{name}-p")] == [
        f"{name}-p000",
        f"{name}-p001",
    ]

    thread = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 30})
    thread.start()
    try:
        # The management API refreshes its figures every few seconds.
        deadline = time.monotonic() + 20
        while True:
            lines = domain_events("--url", broker_url, "status", name).splitlines()
            partitions = [line for line in lines if line.startswith(f"{name}-p")]
            if all(f"pid={os.getpid()}" in line for line in partitions):
                break
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(1)
    finally:
        subscriber.stop_consuming()
        thread.join(30)
