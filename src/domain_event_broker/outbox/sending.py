"""One batch of outbox rows through the broker: publish them, then sort what became of each.

The relay (``relay.py``) decides when a batch goes and what to do after an
outage; this sends it. Each row's payload goes out byte for byte as stored,
confirms pipelined, and comes back sent, to be tried again later, or parked
(the rule is :func:`.attempts.sort_outcomes`). A row that could never be sent
(a bad routing key, a payload larger than the broker takes) is refused alone,
before it could fail the others of its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .. import observability
from ..core.messages import OutgoingMessage, PublishOutcome
from ..errors import EventRefused, EventTooLarge, PublishError
from ..observability import Occurrence
from ..publisher import Publisher
from ..settings import BrokerSettings
from .attempts import BatchResult, Refusal, RetryPolicy, sort_outcomes
from .stats import RelayStats
from .store import PendingEvent

# The relay's own logger: operators filter its lines by that name.
log = logging.getLogger(__package__ + ".relay")


@dataclass
class BatchSender:
    """Publishes batches of outbox rows on one publisher; counts and logs the refused ones."""

    url: BrokerSettings
    exchange: str
    publish_timeout: float
    max_message_size: int
    policy: RetryPolicy
    stats: RelayStats
    #: Whether to keep waiting for confirms while the broker blocks publishers (an
    #: alarm): True until the relay stops. The rows stay locked meanwhile, and none
    #: is sent again for the time-out that re-sending would have been.
    while_blocked: Callable[[], bool] = field(default=lambda: True)
    _publisher: Publisher | None = field(default=None, init=False)

    @property
    def connected(self) -> bool:
        publisher = self._publisher
        return publisher is not None and publisher.connected

    def connect(self) -> Publisher:
        """The publisher, connected (raises BrokerUnavailable when RabbitMQ cannot be reached)."""
        if self._publisher is None:
            # No nack grace: a refused row comes back through the relay's own
            # durable backoff, and a grace's re-send on a fresh channel would
            # re-send the batch's other unconfirmed events too (duplicates).
            self._publisher = Publisher(
                self.url, self.exchange, publish_timeout=self.publish_timeout, nack_grace=0.0
            )
        else:
            self._publisher.ensure_connected()
        return self._publisher

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.disconnect()

    def send(self, rows: Sequence[PendingEvent]) -> BatchResult:
        """Publish ``rows``; which were sent, which are tried again later, which are parked."""
        outcomes = self._outcomes(rows)
        result = sort_outcomes(
            [row.id for row in rows], [row.attempts for row in rows], outcomes, self.policy
        )
        self.stats.relayed += len(result.sent)
        self.stats.batches += 1
        if result.refused:
            self._report_refusals(rows, result.refused)
        if log.isEnabledFor(logging.DEBUG):
            for row, outcome in zip(rows, outcomes, strict=True):
                log.debug(
                    "outbox row %d: event %s (%s) %s",
                    row.id,
                    row.uuid_string,
                    row.routing_key,
                    "sent" if outcome.confirmed else f"not sent: {outcome.error}",
                )
        return result

    def _outcomes(self, rows: Sequence[PendingEvent]) -> list[PublishOutcome]:
        """One outcome per row, in order."""
        messages: list[OutgoingMessage] = []
        invalid: dict[int, PublishOutcome] = {}
        for index, row in enumerate(rows):
            try:
                message = row.message()
                size = len(message.body)
                if size > self.max_message_size:
                    raise EventTooLarge(
                        f"the payload of {size} bytes is larger than the broker takes "
                        f"(max_message_size {self.max_message_size}); not sent",
                        size=size,
                        limit=self.max_message_size,
                    )
            except (ValueError, TypeError, PublishError) as error:
                # A row written around add_event (a bad routing key, a huge payload)
                # is refused alone, before it could fail the others.
                placeholder = OutgoingMessage("invalid", b"", row.uuid_string)
                invalid[index] = PublishOutcome(placeholder, error)
                continue
            messages.append(message)
        published = self.connect().publish_batch(messages, while_blocked=self.while_blocked)
        if any(_refused_by_broker(outcome.error) for outcome in published):
            # A broker that refused on this channel may go on refusing there (RabbitMQ
            # after a quorum queue's leader election): the next batch gets a fresh one.
            log.info("renewing the relay's connection to RabbitMQ after a refusal")
            self.close()
        outcomes = iter(published)
        return [invalid.get(index) or next(outcomes) for index in range(len(rows))]

    def _report_refusals(self, rows: Sequence[PendingEvent], refused: Sequence[Refusal]) -> None:
        by_id = {row.id: row for row in rows}
        retried = [refusal for refusal in refused if not refusal.parked]
        self.stats.refused += len(refused)
        if retried:
            first = retried[0]
            log.warning(
                "RabbitMQ refused %d of %d events of a batch; each is tried again later "
                "(first: outbox row %d, event %s (%s), attempt %d of %d, next in %.0f s: %s)",
                len(retried),
                len(rows),
                first.id,
                by_id[first.id].uuid_string,
                by_id[first.id].routing_key,
                first.attempts,
                self.policy.max_attempts,
                first.delay or 0.0,
                first.error,
            )
        listening = observability.listening()
        for refusal in refused:
            row = by_id[refusal.id]
            if refusal.parked:
                self.stats.parked += 1
                log.error(
                    "outbox row %d parked %s: event %s (%s): %s. "
                    "Retry or discard it: domain-events outbox retry|discard, or manage.py "
                    "domain_events_outbox retry|discard",
                    refusal.id,
                    "at once (sending it again cannot succeed)"
                    if refusal.at_once
                    else f"after {refusal.attempts} refused attempts",
                    row.uuid_string,
                    row.routing_key,
                    refusal.error,
                )
            if listening:
                kind = "outbox_parked" if refusal.parked else "outbox_refused"
                observability.notify(Occurrence(kind, row.routing_key, row.uuid_string))


def _refused_by_broker(error: BaseException | None) -> bool:
    # Too large is the size close: the publisher reopened its channel already.
    return isinstance(error, EventRefused) and not isinstance(error, EventTooLarge)
