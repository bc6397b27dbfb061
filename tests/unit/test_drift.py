"""Topology drift (core/drift.py): declarations against a broker snapshot, and the fixes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.drift import (
    Broker,
    ExchangeState,
    QueueState,
    differences,
)
from domain_event_broker.core.operations import Bind, ExchangeDeclare, Operation, QueueDeclare
from domain_event_broker.core.rabbitmq import RabbitMQVersion
from domain_event_broker.core.topology import SubscriberTopology

words = st.text(alphabet="abcdefgh", min_size=1, max_size=5)
topologies = st.builds(
    SubscriberTopology,
    name=words,
    binding_keys=st.lists(
        st.lists(words | st.just("*"), min_size=1, max_size=3).map(".".join),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(tuple),
    dead_letter=st.booleans(),
    queue_type=st.sampled_from(["classic", "quorum"]),
)
releases = st.sampled_from([RabbitMQVersion(3, 10, 8), RabbitMQVersion(4, 0, 5)])


def broker_as_declared(operations: Sequence[Operation], messages: int = 0) -> Broker:
    queues, exchanges, bindings = {}, {}, set()
    for operation in operations:
        if isinstance(operation, QueueDeclare):
            arguments = dict(operation.arguments or {})
            arguments.setdefault("x-queue-type", "classic")  # as RabbitMQ 4.x lists it
            queues[operation.name] = QueueState(
                operation.durable, operation.exclusive, operation.auto_delete, arguments, messages
            )
        elif isinstance(operation, ExchangeDeclare):
            exchanges[operation.name] = ExchangeState(operation.type, operation.durable)
        else:
            bindings.add((operation.exchange, operation.queue, operation.routing_key))
    bindings.add(("", "some-queue", "some-queue"))  # the default exchange's binding
    return Broker(queues, exchanges, frozenset(bindings))


@given(topologies, releases)
def test_a_broker_that_holds_what_is_declared_has_no_difference(
    topology: SubscriberTopology, rabbitmq: RabbitMQVersion
) -> None:
    operations = topology.declarations(rabbitmq)
    assert differences(operations, broker_as_declared(operations)) == []


@given(topologies, releases, st.integers(min_value=0, max_value=3))
def test_a_queue_declared_otherwise_is_one_difference_and_never_deleted_with_events(
    topology: SubscriberTopology, rabbitmq: RabbitMQVersion, messages: int
) -> None:
    operations = topology.declarations(rabbitmq)
    broker = broker_as_declared(operations, messages)
    changed = dataclasses.replace(broker.queues[topology.queue], arguments={"x-max-length": 10})
    broker = dataclasses.replace(broker, queues={**broker.queues, topology.queue: changed})
    [difference] = differences(operations, broker)
    assert difference.subject == f"queue {topology.queue}"
    assert "'x-max-length': 10" in difference.what
    deletes = f"delete queue name={topology.queue}" in difference.fix
    assert deletes == (messages == 0)
    if messages:
        assert f"holds {messages} events" in difference.fix


@given(topologies, releases)
def test_missing_and_extra_bindings(
    topology: SubscriberTopology, rabbitmq: RabbitMQVersion
) -> None:
    operations = topology.declarations(rabbitmq)
    broker = broker_as_declared(operations)
    lost = (topology.exchange, topology.queue, topology.binding_keys[0])
    extra = (topology.exchange, topology.queue, "no.longer.registered")
    broker = dataclasses.replace(broker, bindings=(broker.bindings - {lost}) | {extra})
    found = differences(operations, broker)
    assert [d.fix for d in found] == [
        f"rabbitmqadmin declare binding source={lost[0]} destination={lost[1]} "
        f"routing_key={lost[2]}",
        f"rabbitmqadmin delete binding source={extra[0]} destination_type=queue "
        f"destination={extra[1]} properties_key={extra[2]}",
    ]


@given(topologies, releases)
def test_a_missing_queue_is_one_difference_not_one_per_binding(
    topology: SubscriberTopology, rabbitmq: RabbitMQVersion
) -> None:
    operations = topology.declarations(rabbitmq)
    full = broker_as_declared(operations)
    queues = {k: v for k, v in full.queues.items() if k != topology.queue}
    bindings = frozenset(b for b in full.bindings if b[1] != topology.queue)
    found = differences(operations, Broker(queues, full.exchanges, bindings))
    assert [d.subject for d in found] == [f"queue {topology.queue}"]
    assert "declare queue" in found[0].fix


def test_an_exchange_of_another_type() -> None:
    operations: list[Operation] = [
        ExchangeDeclare("domain-events", "topic", True),
        QueueDeclare("q", durable=True),
        Bind("q", "domain-events", "a.b"),
    ]
    broker = broker_as_declared(operations)
    broker = dataclasses.replace(broker, exchanges={"domain-events": ExchangeState("fanout", True)})
    [difference] = differences(operations, broker)
    assert difference.what.startswith("is a durable fanout exchange; the code declares")
    assert difference.fix.startswith("rabbitmqadmin delete exchange name=domain-events")
