"""Topology as values: the steps of declaring exchanges, queues and bindings.

The core says what to declare (:mod:`.topology`); each driver carries the steps
out on its own channels. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExchangeDeclare:
    name: str
    type: str
    durable: bool
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class QueueDeclare:
    name: str
    durable: bool
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None
    #: How releases before this one (or RabbitMQ 3.x rules) declared the queue: what
    #: a declarer declares instead when RabbitMQ says the queue exists with other
    #: arguments. A queue is never re-declared with other arguments (that fails).
    previous: QueueDeclare | None = field(default=None, compare=False)
    #: The ERROR a declarer logs when it fell back to ``previous``: what is at stake
    #: and the command an operator runs to fix it.
    after_previous: str = field(default="", compare=False)


@dataclass(frozen=True)
class Bind:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class ExchangeBind:
    """Events that ``source`` routes with ``routing_key`` also go to exchange ``destination``."""

    destination: str
    source: str
    routing_key: str


#: One step of declaring a topology; each driver knows how to carry out each kind.
Operation = ExchangeDeclare | QueueDeclare | Bind | ExchangeBind
