"""The one place that stores retry and dead-letter copies, confirmed, before the original is acked.

Path of a failed delivery: ``submit`` -> (queued) -> copy published -> the
broker's confirm -> ``pump`` reports it stored (the I/O loop acks the
original). A copy the broker refuses (nack; unroutable even by the fallback;
a full queue with ``reject-publish``) is not a reason to hot-loop: the
original goes back to its queue only after a pause of its subscriber that
grows while refusals go on (:class:`RefusalBackoff`), the error is logged once
per burst, and nothing is lost. A confirm that does not come within
``publish_timeout`` raises :class:`CopyTimeout`: the loop drops the connection
and reconnects (the original is redelivered), it never waits for ever.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from ..copies import copy_properties
from ..outcome import Action, Outcome, failure_headers, retry_headers
from ..topology import ROUTING_KEY_HEADER, SubscriberTopology
from .copy_channel import Confirm, CopyChannel
from .delivery import Delivery
from .handling import log


class CopyTimeout(pika.exceptions.AMQPConnectionError):
    """The broker did not confirm a copy within ``publish_timeout``: reconnect."""


class CopyChannelClosed(pika.exceptions.AMQPConnectionError):
    """The broker closed the channel the copies go through (an exchange vanished?)."""


class RefusalBackoff:
    """How long a subscriber pauses after its copies were refused: capped, growing per refusal.

    >>> backoff = RefusalBackoff(initial=0.5, maximum=4.0)
    >>> backoff.refused(now=0.0), backoff.refused(now=0.5), backoff.paused_until
    (True, False, 1.5)
    >>> backoff.stored()  # the burst is over: two refusals
    2
    """

    def __init__(self, initial: float = 0.5, maximum: float = 15.0, factor: float = 2.0) -> None:
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


@dataclass(eq=False)
class _Job:
    delivery: Delivery
    outcome: Outcome
    headers: dict[str, Any] = field(default_factory=dict)
    fallback_tried: bool = False
    deadline: float = 0.0


#: Copies published and not yet confirmed, at most (as a publisher pipelines events).
MAX_IN_FLIGHT = 64


class FailureStore:
    """Stores the copies of one connection, published in submission order, several in flight."""

    def __init__(self, connection: BlockingConnection, publish_timeout: float) -> None:
        self.publish_timeout = publish_timeout
        self._connection = connection
        self._channel = CopyChannel(connection)
        self._queued: deque[_Job] = deque()
        self._in_flight: set[_Job] = set()
        # After a nack the channel is replaced, once the copies still on it are confirmed.
        self._reopen = False
        #: Refused originals waiting for their subscriber's pause to end.
        self._held: list[tuple[float, Delivery]] = []
        self._backoff: dict[str, RefusalBackoff] = {}

    @property
    def pending(self) -> int:
        """Deliveries whose copy is queued, in flight, or held after a refusal."""
        return len(self._queued) + len(self._held) + len(self._in_flight)

    def submit(self, delivery: Delivery, outcome: Outcome) -> None:
        self._queued.append(_Job(delivery, outcome))

    def pump(self, now: float) -> list[tuple[Delivery, bool]]:
        """Advance: returns deliveries whose copy is stored (True) or that go back now (False)."""
        if not (self._in_flight or self._queued or self._held or self._reopen):
            return []  # the usual case, once per pass of the consume loop: nothing failed
        settled: list[tuple[Delivery, bool]] = []
        for token, result in self._channel.take_results():
            assert isinstance(token, _Job)
            self._in_flight.discard(token)
            self._on_confirm(token, result, now, settled)
        self._check_in_flight(now)
        due = [delivery for resume_at, delivery in self._held if resume_at <= now]
        if due:
            self._held = [(at, delivery) for at, delivery in self._held if at > now]
            settled += [(delivery, False) for delivery in due]
        if self._reopen and not self._in_flight:
            # RabbitMQ 3.10 keeps refusing on a channel that first published to
            # a quorum queue while it elected a new leader; a fresh one works.
            self._reopen = False
            self._channel.close()
            self._channel = CopyChannel(self._connection)
        if not self._reopen:
            self._publish_queued(now, settled)
        return settled

    def release_held(self, now: float) -> list[Delivery]:
        """On the way out: originals held or queued behind a refusal pause go back now."""
        released = [delivery for _, delivery in self._held]
        self._held = []
        for _ in range(len(self._queued)):
            job = self._queued.popleft()
            if self._backoff_of(job).paused(now):
                released.append(job.delivery)
            else:
                self._queued.append(job)
        return released

    def close(self) -> None:
        self._channel.close()

    # Copies in flight ---------------------------------------------------------------------
    def _check_in_flight(self, now: float) -> None:
        if not self._in_flight:
            return
        if not self._channel.is_open:
            raise CopyChannelClosed("the channel storing retry and dead-letter copies closed")
        late = min(self._in_flight, key=lambda job: job.deadline)
        if now > late.deadline:
            raise CopyTimeout(
                f"RabbitMQ did not confirm the {late.outcome.action.value} copy of event "
                f"{late.delivery.event_id} within {self.publish_timeout:.0f} s"
            )

    def _on_confirm(
        self, job: _Job, result: Confirm, now: float, settled: list[tuple[Delivery, bool]]
    ) -> None:
        if result is Confirm.STORED:
            self._stored(job)
            settled.append((job.delivery, True))
        elif result is Confirm.UNROUTABLE and not job.fallback_tried:
            job.fallback_tried = True
            self._publish(job, now, settled)
        elif result is Confirm.REFUSED:
            self._refused(job, now, "refused by RabbitMQ")
            self._reopen = True
        else:
            self._refused(job, now, "unroutable")

    def _publish_queued(self, now: float, settled: list[tuple[Delivery, bool]]) -> None:
        for _ in range(len(self._queued)):
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return
            job = self._queued.popleft()
            if self._backoff_of(job).paused(now):
                self._queued.append(job)  # its subscriber pauses; others may go on
                continue
            self._publish(job, now, settled)

    def _publish(self, job: _Job, now: float, settled: list[tuple[Delivery, bool]]) -> None:
        delivery = job.delivery
        topology = delivery.registration.topology
        try:
            exchange, routing_key = self._destination(job, topology, now)
            self._channel.publish(
                job,
                exchange,
                routing_key or delivery.routing_key,
                delivery.body,
                copy_properties(delivery.properties, job.headers),
            )
        except (TypeError, ValueError, UnicodeError, pika.exceptions.AMQPError) as error:
            # A header pika cannot write: this copy can never be stored as it is.
            self._refused(job, now, f"cannot be written ({error})")
            return
        job.deadline = now + self.publish_timeout
        self._in_flight.add(job)

    def _destination(
        self, job: _Job, topology: SubscriberTopology, now: float
    ) -> tuple[str, str | None]:
        delivery = job.delivery
        if job.outcome.action is Action.RETRY:
            job.headers = retry_headers(delivery.properties.headers, delivery.retries)
            # The copy comes back with the wait queue's name as routing key: keep the event's.
            job.headers[ROUTING_KEY_HEADER] = delivery.routing_key
            if job.fallback_tried:
                topology.forget_declarations()  # the wait queue was deleted behind our back
            return self._retry_destination(topology, round(job.outcome.delay * 1000), now)
        if not job.headers:
            failed_at = datetime.now(timezone.utc).isoformat()
            job.headers = failure_headers(
                delivery.properties.headers, job.outcome, topology.name, delivery.retries, failed_at
            )
        if job.fallback_tried:
            # The dead-letter exchange has no binding for this key (binding keys
            # changed?): straight into the dead-letter queue, with the key kept.
            job.headers[ROUTING_KEY_HEADER] = delivery.routing_key
            return "", topology.dead_letter_queue
        return topology.dead_letter_exchange, None

    def _retry_destination(
        self, topology: SubscriberTopology, delay_ms: int, now: float
    ) -> tuple[str, str | None]:
        """Where a retry copy goes: (exchange, routing key or None for the event's own).

        The one place that knows how a retry reaches its wait queue.
        """
        topology.declare_wait_queue(self._channel.channel, delay_ms, now)
        return topology.retry_destination(delay_ms)

    # Outcomes -------------------------------------------------------------------------
    def _backoff_of(self, job: _Job) -> RefusalBackoff:
        name = job.delivery.registration.name
        backoff = self._backoff.get(name)
        if backoff is None:
            backoff = self._backoff[name] = RefusalBackoff()
        return backoff

    def _stored(self, job: _Job) -> None:
        refusals = self._backoff_of(job).stored()
        if refusals:
            log.warning(
                "subscriber %s: %s copies are stored again, after %d refused",
                job.delivery.registration.name,
                job.outcome.action.value,
                refusals,
            )

    def _refused(self, job: _Job, now: float, why: str) -> None:
        backoff = self._backoff_of(job)
        if backoff.refused(now):
            log.error(
                "subscriber %s: could not store the %s copy of event %s (%s): %s; the event "
                "goes back to its queue after a pause (up to %.0f s while copies are refused)",
                job.delivery.registration.name,
                job.outcome.action.value,
                job.delivery.event_id,
                job.delivery.routing_key,
                why,
                backoff.maximum,
            )
        self._held.append((backoff.paused_until, job.delivery))


def close_quietly(store: FailureStore | None) -> None:
    if store is not None:
        with contextlib.suppress(Exception):
            store.close()
