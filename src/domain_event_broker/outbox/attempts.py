"""What the relay does with a row whose event the broker refused: try later, or park it.

Pure rules, no I/O. A refusal is about one event (a full queue with
``x-overflow: reject-publish``, a policy, an event the broker will not take);
it never holds back the other rows. The row keeps its attempt count, its last
error and when to try again; after ``max_attempts`` refusals it is *parked*:
the relay leaves it alone until an operator retries or discards it
(``domain-events outbox retry|discard``, ``manage.py domain_events_outbox``).

A row over the broker's ``max_message_size``
(:class:`~domain_event_broker.errors.EventTooLarge`) is parked at once: sending
it again cannot succeed, and its reason says by how much it is too large.

Only what is about the row itself counts against it: the broker's refusal of
its event (:class:`~domain_event_broker.errors.EventRefused`) or a row that
cannot even be turned into a message (``ValueError``/``TypeError``: a bad
routing key). Anything else (an unreachable broker, a confirm that did not come
in time under a memory or disk alarm, the publisher's own failure) is about
the broker or the relay as a whole: no row is touched then, and the relay backs
off (see :mod:`domain_event_broker.outage`); a long alarm parks nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.defaults import OUTBOX_MAX_RETRY_DELAY as MAX_RETRY_DELAY
from ..core.defaults import OUTBOX_RETRY_DELAY as RETRY_DELAY
from ..core.messages import PublishOutcome
from ..core.outcome import bounded
from ..errors import EventRefused, EventTooLarge

#: Refusals after which a row is parked.
MAX_ATTEMPTS = 10
#: Bytes of an error kept in the row's ``last_error``.
MAX_ERROR_BYTES = 2000


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential pauses between attempts, and when to give up (park).

    >>> policy = RetryPolicy(max_attempts=4, first_delay=10, max_delay=25)
    >>> [policy.delay_after(attempts) for attempts in (1, 2, 3, 4)]
    [10.0, 20.0, 25.0, None]
    """

    max_attempts: int = MAX_ATTEMPTS
    first_delay: float = RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.first_delay <= self.max_delay:
            raise ValueError(
                "retry delays must satisfy 0 <= first_delay <= max_delay, got "
                f"{self.first_delay} and {self.max_delay}"
            )

    def delay_after(self, attempts: int) -> float | None:
        """Seconds to wait after the ``attempts``-th refusal; ``None``: park the row."""
        if attempts >= self.max_attempts:
            return None
        # The exponent is capped so that a huge attempt count cannot overflow a float.
        exponent = min(max(attempts - 1, 0), 64)
        return float(min(self.max_delay, self.first_delay * 2.0**exponent))


@dataclass(frozen=True)
class Refusal:
    """A row the broker refused: its new attempt count and when to try again (``None``: park)."""

    id: int
    attempts: int
    error: str
    delay: float | None
    #: Parked at its first refusal: sending it again cannot succeed (too large).
    at_once: bool = False

    @property
    def parked(self) -> bool:
        return self.delay is None


@dataclass
class BatchResult:
    """What became of the rows of one batch.

    Rows in neither list were not tried (the broker was unreachable): the store
    leaves them as they were, and ``outage`` says why.
    """

    sent: list[int] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    outage: BaseException | None = None


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` is about the broker or the relay as a whole rather than one row.

    Only a refusal of the event (:class:`~domain_event_broker.errors.EventRefused`)
    and a row that cannot be sent as it is (``ValueError``, ``TypeError``) count
    an attempt; a plain :class:`~domain_event_broker.errors.PublishError` (the
    publisher closed or failed, no confirm in time) does not.
    """
    return not isinstance(error, (EventRefused, ValueError, TypeError))


def sort_outcomes(
    ids: Sequence[int],
    attempts: Sequence[int],
    outcomes: Sequence[PublishOutcome],
    policy: RetryPolicy,
) -> BatchResult:
    """Turn one publish outcome per row into rows sent, rows refused, rows left untried."""
    result = BatchResult()
    for row_id, before, outcome in zip(ids, attempts, outcomes, strict=True):
        error = outcome.error
        if error is None:
            result.sent.append(row_id)
        elif is_outage(error):
            if result.outage is None:
                result.outage = error
        else:
            result.refused.append(refusal(row_id, before, error, policy))
    return result


def refusal(row_id: int, before: int, error: BaseException, policy: RetryPolicy) -> Refusal:
    """The refusal of a row that had ``before`` attempts already.

    An event too large for the broker is parked at once, with its size and the limit.
    """
    attempts = before + 1
    if isinstance(error, EventTooLarge):
        return Refusal(row_id, attempts, too_large_reason(error), None, at_once=True)
    text = bounded(f"{type(error).__name__}: {error}", MAX_ERROR_BYTES)
    return Refusal(row_id, attempts, text, policy.delay_after(attempts))


def too_large_reason(error: EventTooLarge) -> str:
    """The parked row's reason: ``max_message_size: the event is N bytes, the limit L``."""
    if error.size is None or error.limit is None:
        return bounded(f"max_message_size: {error}", MAX_ERROR_BYTES)
    return f"max_message_size: the event is {error.size} bytes, the limit {error.limit}"
