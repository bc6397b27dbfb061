"""What connection_settings may be, on the real broker: pika parameters, lists, the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pika

from domain_event_broker import BrokerSettings, DomainEvent, Subscriber, publish_domain_event
from support import AMQP_PORT, consume_until, rabbitmqctl

MakeSubscriber = Callable[..., Subscriber]


def parameters(vhost: str, port: int = AMQP_PORT, **options: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials("guest", "guest"),
        **options,
    )


def connection_names() -> list[str]:
    output = rabbitmqctl("list_connections", "client_properties", "--quiet", "--formatter", "json")
    names = []
    for row in json.loads(output):
        for key, _type, value in row["client_properties"]:
            if key == "connection_name":
                names.append(value)
    return names


def test_pika_parameters_and_a_list_of_nodes(
    vhost: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    # The first node does not answer: the next one in the list is used.
    nodes = [parameters(vhost, port=1, connection_attempts=1), parameters(vhost)]
    label = f"params-{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings(nodes, connection_name=label)
    received: list[DomainEvent] = []
    subscriber = make_subscriber(settings)
    subscriber.register(received.append, name, [f"{name}.#"])
    publish_domain_event(f"{name}.made", {"via": "pika"}, connection_settings=settings)
    consume_until(subscriber, lambda: bool(received))
    assert [event.data for event in received] == [{"via": "pika"}]
    assert label in connection_names()  # the shared publisher is still connected
    assert nodes[1].client_properties is None  # the caller's objects are left as they were


def test_a_client_properties_query_names_the_connection(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    label = f"from-url-{uuid.uuid4().hex[:8]}"
    url = f"{broker_url}?client_properties={{'connection_name':'{label}'}}"
    received: list[DomainEvent] = []
    subscriber = make_subscriber(url)
    subscriber.register(received.append, name, [f"{name}.#"])
    publish_domain_event(f"{name}.named", {}, connection_settings=url)
    consume_until(subscriber, lambda: bool(received))
    assert label in connection_names()


def test_the_default_broker_comes_from_the_environment(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    received: list[DomainEvent] = []
    subscriber = make_subscriber()
    subscriber.register(received.append, name, [f"{name}.#"])
    script = (
        "from domain_event_broker import publish_domain_event; "
        f"publish_domain_event('{name}.from_env', {{'n': 1}})"
    )
    env = {**os.environ, "DOMAIN_EVENT_BROKER": broker_url}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    consume_until(subscriber, lambda: bool(received))
    assert [(event.routing_key, event.data) for event in received] == [
        (f"{name}.from_env", {"n": 1})
    ]
