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
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from ..copies import copy_properties
from ..core.copies import CopyPlan, RefusalBackoff, plan_copy
from ..core.outcome import Outcome
from ..errors import TopologyMismatch
from .copy_channel import Confirm, CopyChannel
from .delivery import Delivery

log = logging.getLogger(__package__)

__all__ = ["CopyTimeout", "FailureStore", "RefusalBackoff", "close_quietly"]


class CopyTimeout(pika.exceptions.AMQPConnectionError):
    """The broker did not confirm a copy within ``publish_timeout``: reconnect."""


class CopyChannelClosed(pika.exceptions.AMQPConnectionError):
    """The broker closed the channel the copies go through (an exchange vanished?)."""


@dataclass(eq=False)
class _Job:
    delivery: Delivery
    outcome: Outcome
    failed_at: str = ""
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
        try:
            plan = self._plan(job, now)
            self._channel.publish(
                job,
                plan.exchange,
                plan.routing_key,
                delivery.body,
                copy_properties(delivery.properties, plan.headers),
            )
        except TopologyMismatch as error:
            # A wait queue left on the broker with other arguments, or one the user may
            # not configure (AccessRefused): RabbitMQ closed the copies' channel. Once an
            # operator removes it or grants the permission, a fresh channel works.
            self._refused(job, now, str(error))
            self._reopen = True
            return
        except (TypeError, ValueError, UnicodeError, pika.exceptions.AMQPError) as error:
            if not self._channel.is_open:
                # RabbitMQ closed the copies' channel (a 403, a 404 on a declare...):
                # a closed channel stores nothing ever again; a fresh one may.
                self._refused(job, now, f"the channel storing copies closed ({error})")
                self._reopen = True
                return
            # A header pika cannot write: this copy can never be stored as it is.
            self._refused(job, now, f"cannot be written ({error})")
            return
        job.deadline = now + self.publish_timeout
        self._in_flight.add(job)

    def _plan(self, job: _Job, now: float) -> CopyPlan:
        delivery = job.delivery
        topology = delivery.registration.topology
        if not job.failed_at:  # a dead letter's second try keeps the time of its failure
            job.failed_at = datetime.now(timezone.utc).isoformat()
        plan = plan_copy(
            topology,
            job.outcome,
            delivery.properties.headers,
            delivery.retries,
            delivery.routing_key,
            failed_at=job.failed_at,
            fallback=job.fallback_tried,
        )
        if plan.wait_queue_ms is not None:
            if job.fallback_tried:
                topology.forget_declarations()  # the wait queue was deleted behind our back
            topology.declare_wait_queue(self._channel.channel, plan.wait_queue_ms, now)
        return plan

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
