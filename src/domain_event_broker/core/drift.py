"""Topology drift: what subscribers would declare against what a broker holds, and the fixes.

Pure: the declarations (:mod:`.operations`) and a snapshot of the broker
(:class:`Broker`) in, a list of :class:`Difference` out, each with the command
that fixes it. A queue that holds events is never offered deletion as a fix:
its events would go with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .operations import Bind, ExchangeDeclare, Operation, QueueDeclare

MISSING = "missing (its bindings with it)"


@dataclass(frozen=True)
class QueueState:
    durable: bool
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)
    #: Events in it (ready and unacknowledged); a queue holding any is never deleted as a fix.
    messages: int = 0


@dataclass(frozen=True)
class ExchangeState:
    type: str
    durable: bool
    auto_delete: bool = False


@dataclass(frozen=True)
class Broker:
    """What one vhost holds: queues and exchanges by name, bindings as (exchange, queue, key)."""

    queues: Mapping[str, QueueState]
    exchanges: Mapping[str, ExchangeState]
    bindings: frozenset[tuple[str, str, str]]


@dataclass(frozen=True)
class Difference:
    subject: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.what}\n    fix: {self.fix}"


def _arguments(arguments: Mapping[str, Any] | None) -> dict[str, Any]:
    # RabbitMQ 4.x lists a classic queue with x-queue-type=classic, declared or not.
    return {k: v for k, v in (arguments or {}).items() if (k, v) != ("x-queue-type", "classic")}


def _matches(declared: QueueDeclare, state: QueueState) -> bool:
    return (
        _arguments(declared.arguments) == _arguments(state.arguments)
        and declared.durable == state.durable
        and declared.exclusive == state.exclusive
        and declared.auto_delete == state.auto_delete
    )


def _declare_queue(declared: QueueDeclare) -> str:
    arguments = json.dumps(_arguments(declared.arguments))
    return (
        f"rabbitmqadmin declare queue name={declared.name} durable={str(declared.durable).lower()}"
        f" auto_delete={str(declared.auto_delete).lower()} arguments='{arguments}'"
        " (or start the subscriber: it declares it)"
    )


def _queue_difference(declared: QueueDeclare, state: QueueState | None) -> Difference | None:
    name = declared.name
    if state is None:
        return Difference(f"queue {name}", MISSING, _declare_queue(declared))
    if _matches(declared, state):
        return None
    have, want = _arguments(state.arguments), _arguments(declared.arguments)
    what = (
        f"declared with arguments {have} (durable={state.durable}, auto_delete="
        f"{state.auto_delete}); the code declares {want} (durable={declared.durable}, "
        f"auto_delete={declared.auto_delete})"
    )
    if declared.previous is not None and _matches(declared.previous, state):
        what += "; the subscriber accepts this older form and works"
    if state.messages:
        fix = (
            f"it holds {state.messages} events, so deleting it is no fix (they would be lost). "
            f"Move them out first: a shovel to a temporary queue (rabbitmq-plugins enable "
            f"rabbitmq_shovel; rabbitmqctl set_parameter shovel {name}-move "
            f"""'{{"src-queue": "{name}", "dest-queue": "{name}-moved", """
            """"src-delete-after": "queue-length"}'), then re-declare """
            f"{name} as the code does and shovel them back"
        )
    else:
        fix = (
            f"it is empty: rabbitmqadmin delete queue name={name}, then start the subscriber "
            "(it declares the queue as the code says)"
        )
    return Difference(f"queue {name}", what, fix)


def _exchange_difference(
    declared: ExchangeDeclare, state: ExchangeState | None
) -> Difference | None:
    name = declared.name
    declare = (
        f"rabbitmqadmin declare exchange name={name} type={declared.type} "
        f"durable={str(declared.durable).lower()} (or start the subscriber: it declares it)"
    )
    if state is None:
        return Difference(f"exchange {name}", MISSING, declare)
    if state.type == declared.type and state.durable == declared.durable:
        return None
    return Difference(
        f"exchange {name}",
        f"is a {'durable' if state.durable else 'transient'} {state.type} exchange; the code "
        f"declares a {'durable' if declared.durable else 'transient'} {declared.type} one",
        f"rabbitmqadmin delete exchange name={name} (an exchange holds no events; its "
        f"bindings go with it), then {declare}",
    )


def differences(declared: Iterable[Operation], broker: Broker) -> list[Difference]:
    """Each difference between the ``declared`` operations and ``broker``, with its fix.

    Bindings on a declared queue that no declaration makes are reported too:
    they route events the code no longer asks for.
    """
    found: list[Difference] = []
    seen: set[str] = set()
    wanted: set[tuple[str, str, str]] = set()
    queues: set[str] = set()
    missing: set[str] = set()
    for operation in declared:
        if isinstance(operation, QueueDeclare) and operation.name not in seen:
            seen.add(operation.name)
            queues.add(operation.name)
            difference = _queue_difference(operation, broker.queues.get(operation.name))
        elif isinstance(operation, ExchangeDeclare) and operation.name not in seen:
            seen.add(operation.name)
            difference = _exchange_difference(operation, broker.exchanges.get(operation.name))
        elif isinstance(operation, Bind):
            binding = (operation.exchange, operation.queue, operation.routing_key)
            wanted.add(binding)
            difference = None
            covered = operation.queue in missing or operation.exchange in missing
            if binding not in broker.bindings and not covered:
                difference = Difference(
                    f"binding {operation.exchange} -> {operation.queue}",
                    f"missing for {operation.routing_key!r}: those events do not reach it",
                    f"rabbitmqadmin declare binding source={operation.exchange} "
                    f"destination={operation.queue} routing_key={operation.routing_key}",
                )
        else:
            difference = None
        if difference is not None:
            found.append(difference)
            if difference.what == MISSING:  # its bindings come with its declaration
                missing.add(difference.subject.split(" ", 1)[1])
    for exchange, queue, key in sorted(broker.bindings - wanted):
        if queue in queues and exchange and (exchange, queue, key) not in wanted:
            found.append(
                Difference(
                    f"binding {exchange} -> {queue}",
                    f"bound for {key!r}, which the code no longer registers",
                    f"rabbitmqadmin delete binding source={exchange} destination_type=queue "
                    f"destination={queue} properties_key={key}",
                )
            )
    return found
