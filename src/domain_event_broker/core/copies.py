"""Where a retry or dead-letter copy goes, what it carries, and the pause after a refused one.

A handler's failure or ``Retry`` is settled by storing a copy of the delivery
(confirmed) before the original is acked. :func:`plan_copy` decides the copy's
exchange, routing key and headers, and the fallback when the first route is
refused as unroutable; :class:`RefusalBackoff` decides how long a subscriber
pauses while the broker refuses its copies. Both drivers carry these plans out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .defaults import REFUSED_COPY_PAUSE, REFUSED_COPY_PAUSE_MAX
from .outcome import Action, Outcome, failure_headers, retry_headers
from .topology import ROUTING_KEY_HEADER, SubscriberTopology
from .wait_queues import wait_delay_ms

#: The properties a copy keeps, on the sync and asyncio sides alike. Not
#: ``user_id`` (RabbitMQ refuses it unless it names our own user), nor
#: ``expiration`` (a copy must not expire in a queue); ``headers`` and
#: ``delivery_mode`` (persistent) are the copy's own.
COPIED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "app_id",
)


def copied_fields(properties: object, headers: dict[str, Any]) -> dict[str, Any]:
    """The property fields of a re-published copy of a message with ``properties``
    (pika's ``BasicProperties`` or an aio-pika message): persistent, with ``headers``."""
    fields = {name: getattr(properties, name, None) for name in COPIED_PROPERTIES}
    fields.update(headers=headers, delivery_mode=2)
    return fields


@dataclass(frozen=True)
class CopyPlan:
    """Where one copy goes and what it carries."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]
    #: Declare the wait queue of this delay (ms) before publishing (retry copies).
    wait_queue_ms: int | None = None


def plan_copy(
    topology: SubscriberTopology,
    outcome: Outcome,
    original_headers: Mapping[str, Any] | None,
    retries: int,
    routing_key: str,
    *,
    failed_at: str,
    fallback: bool = False,
) -> CopyPlan:
    """The copy that settles a delivery whose ``outcome`` is a retry or a dead letter.

    ``routing_key`` is the event's own; ``fallback`` is the second try after the
    first route was returned as unroutable: a retry goes to its wait queue
    declared afresh (another instance may have removed it as idle), a dead
    letter straight into the dead-letter queue (its exchange has no binding for
    this key: binding keys changed), with the event's key kept in a header.
    """
    if outcome.action is Action.RETRY:
        headers = retry_headers(original_headers, retries)
        # The copy comes back with the wait queue's name as routing key: keep the event's.
        headers[ROUTING_KEY_HEADER] = routing_key
        delay_ms = wait_delay_ms(outcome.delay)
        exchange, key = topology.retry_destination(delay_ms)
        return CopyPlan(exchange, key, headers, delay_ms)
    if outcome.action is not Action.DEAD_LETTER:
        raise ValueError(f"no copy settles a delivery to {outcome.action.value}")
    headers = failure_headers(original_headers, outcome, topology.name, retries, failed_at)
    if fallback:
        headers[ROUTING_KEY_HEADER] = routing_key
        return CopyPlan("", topology.dead_letter_queue, headers)
    return CopyPlan(topology.dead_letter_exchange, routing_key, headers)


class RefusalBackoff:
    """How long a subscriber pauses after its copies were refused: capped, growing per refusal.

    >>> backoff = RefusalBackoff(initial=0.5, maximum=4.0)
    >>> backoff.refused(now=0.0), backoff.refused(now=0.5), backoff.paused_until
    (True, False, 1.5)
    >>> backoff.stored()  # the burst is over: two refusals
    2
    """

    def __init__(
        self,
        initial: float = REFUSED_COPY_PAUSE,
        maximum: float = REFUSED_COPY_PAUSE_MAX,
        factor: float = 2.0,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.refusals = 0
        self.paused_until = 0.0

    def refused(self, now: float) -> bool:
        """Count a refusal; True when it starts a burst (log it then)."""
        pause = min(self.maximum, self.initial * self.factor**self.refusals)
        self.refusals += 1
        self.paused_until = now + pause
        return self.refusals == 1

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def stored(self) -> int:
        """A copy was stored: the burst (if any) is over. Returns its refusals."""
        refusals, self.refusals, self.paused_until = self.refusals, 0, 0.0
        return refusals
