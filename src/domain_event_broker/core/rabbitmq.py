"""What differs between the RabbitMQ releases users run, decided from the version a node reports.

Both drivers read the version from the ``server_properties`` of the connection
(``connection.start``) and log it; the topology asks the rules here, never the
version itself, so each difference is decided in one place:

- RabbitMQ 4.x counts every return of a message to a quorum queue (a requeue, a
  graceful stop, a lost connection, a ``basic.get`` not acked) and drops or
  dead-letters it after 20 by default. 3.x has no limit unless one is set, and
  reads ``x-delivery-limit: -1`` as "none allowed" (checked on 3.10: dropped
  after one return), so the unlimited limit is declared on 4.x only.
- RabbitMQ 4.x deprecates transient (non-durable) non-exclusive queues; 4.3
  refuses them by default (by closing the connection). There a ``durable=False``
  subscriber queue is declared durable with a lease (``x-expires``) instead: it
  is removed once no subscriber has used it for the lease, as a transient queue
  goes when its subscriber goes.

An unknown version (a broker that reports none) gets the 3.x rules: what
existing users' queues were declared with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .operations import QueueDeclare

#: How long a ``durable=False`` subscriber queue outlives its last subscriber on
#: RabbitMQ 4.x (ms): long enough for a restart or a reconnect, short enough that a
#: throw-away subscriber's queue does not collect events for long.
TRANSIENT_QUEUE_LEASE_MS = 5 * 60 * 1000
#: ``x-delivery-limit`` that keeps a returned message for ever (RabbitMQ 4.0 and later).
UNLIMITED_DELIVERIES = -1

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class RabbitMQVersion:
    """The release a RabbitMQ node reported when the connection opened."""

    major: int
    minor: int = 0
    patch: int = 0
    known: bool = True

    @classmethod
    def reported(cls, server_properties: Mapping[str, Any] | None) -> RabbitMQVersion:
        """The version in a node's ``server_properties`` (3.x rules when it names none).

        >>> RabbitMQVersion.reported({"version": b"4.0.5"})
        RabbitMQVersion(major=4, minor=0, patch=5, known=True)
        """
        raw = (server_properties or {}).get("version")
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        match = _VERSION.match(raw) if isinstance(raw, str) else None
        if match is None:
            return UNKNOWN
        major, minor, patch = match.groups()
        return cls(int(major), int(minor), int(patch or 0))

    def __str__(self) -> str:
        if not self.known:
            return "an unknown version (3.x rules)"
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def limits_quorum_deliveries(self) -> bool:
        """Whether quorum queues drop a message returned 20 times unless told otherwise."""
        return self.major >= 4

    @property
    def deprecates_transient_queues(self) -> bool:
        """Whether non-durable, non-exclusive queues are deprecated (refused by 4.3's default)."""
        return self.major >= 4


#: What a node that reports no version gets: the rules existing queues were declared by.
UNKNOWN = RabbitMQVersion(3, 0, 0, known=False)


def for_release(declared: QueueDeclare, subscriber: str, rabbitmq: RabbitMQVersion) -> QueueDeclare:
    """``declared`` (as the 3.x rules declare it) as ``rabbitmq`` needs it.

    The older form stays ``previous``: a queue that exists so is used as it is,
    with an ERROR that says how to fix it.
    """
    arguments = dict(declared.arguments or {})
    quorum = arguments.get("x-queue-type") == "quorum"
    if quorum and rabbitmq.limits_quorum_deliveries:
        return QueueDeclare(
            declared.name,
            durable=True,
            arguments={**arguments, "x-delivery-limit": UNLIMITED_DELIVERIES},
            previous=declared,
            after_previous=(
                f"quorum queue {declared.name!r} of subscriber {subscriber!r} has no "
                f"delivery limit set (an older release declared it): RabbitMQ "
                f"{rabbitmq} drops or dead-letters an event returned 20 times (graceful "
                "stops, requeues, lost connections, reading dead letters). Keep every "
                "event with a policy: rabbitmqctl set_policy -p <vhost> "
                f"{declared.name}-deliveries '^{regex_literal(declared.name)}$' "
                """'{"delivery-limit":-1}' --apply-to quorum_queues"""
            ),
        )
    if not declared.durable and not declared.exclusive and rabbitmq.deprecates_transient_queues:
        return QueueDeclare(
            declared.name,
            durable=True,
            auto_delete=declared.auto_delete,
            arguments={**arguments, "x-expires": TRANSIENT_QUEUE_LEASE_MS},
            previous=declared,
            after_previous=(
                f"queue {declared.name!r} of subscriber {subscriber!r} is a transient "
                f"queue (an older release declared it): RabbitMQ {rabbitmq} deprecates "
                "those and 4.3 refuses them, so the subscriber fails once this one is "
                "gone. Delete it (rabbitmqctl delete_queue -p <vhost> "
                f"{declared.name}) while the subscriber is stopped; it is then declared "
                "durable, with a lease that removes it once it goes unused."
            ),
        )
    return declared


def regex_literal(name: str) -> str:
    """``name`` as a regular expression that matches it alone, for an operator's command."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", name)


def returns_wear_out(queue: Mapping[str, Any] | None, rabbitmq: RabbitMQVersion = UNKNOWN) -> bool:
    """Whether giving a message back to ``queue`` (a row of the management API: ``type``,
    ``arguments``, ``effective_policy_definition``) counts against a delivery limit on
    the node ``rabbitmq`` (unknown: the answer that loses nothing on either).

    Reading a queue by taking and returning would drop its messages at the limit.
    4.x applies 20 when none is set and keeps ``-1`` for ever; 3.x has no limit
    when none is set and reads ``-1`` as "none allowed".

    >>> V4 = RabbitMQVersion(4, 0, 5)
    >>> returns_wear_out({"type": "quorum", "arguments": {"x-delivery-limit": -1}}, V4)
    False
    >>> returns_wear_out({"type": "quorum", "arguments": {}}, V4)
    True
    >>> returns_wear_out({"type": "quorum", "arguments": {}}, RabbitMQVersion(3, 13))
    False
    """
    if not queue or queue.get("type") != "quorum":
        return False
    arguments = queue.get("arguments") or {}
    policy = queue.get("effective_policy_definition") or {}
    limit = arguments.get("x-delivery-limit", policy.get("delivery-limit"))
    if limit is None:
        return rabbitmq.limits_quorum_deliveries or not rabbitmq.known
    try:
        allowed = int(limit)
    except (TypeError, ValueError):
        return True
    return allowed >= 0 or not rabbitmq.limits_quorum_deliveries
