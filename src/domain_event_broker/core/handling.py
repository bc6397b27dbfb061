"""One delivery through its handler, as far as no driver is involved: read it, decide, report.

Both drivers (and their log readers) see the same thing for the same delivery:
:func:`read_event` turns a body and its headers into the event or the outcome
of a body that is no event; :func:`decide` (in :mod:`.outcome`) turns what the
handler raised into an outcome; :func:`log_outcome` writes the one log line of
that outcome, with the traceback of a handler's failure. The driver calls the
handler and passes its own logger, so that every line keeps the logger name
docs/operating.md documents (``domain_event_broker.subscriber``,
``domain_event_broker.aio.subscriber``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from ..errors import InvalidEvent
from ..events import DomainEvent
from .outcome import Action, Outcome, Policy, failure, fate, parse_event, safe_text, undecodable

#: The metrics name of each outcome (every subscriber reports the same).
KINDS = {
    Action.ACK: "handled",
    Action.RETRY: "retried",
    Action.DEAD_LETTER: "dead_lettered",
    Action.DROP: "dropped",
}


class Unreadable(NamedTuple):
    """A delivery whose body or headers are no event: its outcome and why."""

    outcome: Outcome
    why: str
    #: The unexpected error (logged with its traceback); None for a body that is no event.
    error: BaseException | None


def read_event(body: bytes, headers: Any, policy: Policy) -> DomainEvent | Unreadable:
    """The event in a delivery, or the outcome of one that holds none."""
    try:
        return parse_event(body, headers, policy.subscriber)
    except InvalidEvent as error:
        return Unreadable(undecodable(policy, error), "is not a domain event", None)
    except Exception as error:  # a header or body nobody foresaw: still an outcome
        return Unreadable(failure(policy, error, safe_text(error)), "could not be read", error)


class Described(NamedTuple):
    """How the log names one delivery."""

    subscriber: str
    event_id: str | None
    routing_key: str
    dead_letter_queue: str


def log_outcome(
    log: logging.Logger,
    delivery: Described,
    outcome: Outcome,
    *,
    retries: int = 0,
    max_retries: int = 0,
    raised: BaseException | None = None,
    why: str = "failed",
) -> None:
    """The log line of ``outcome`` (none for a handled event unless DEBUG is on)."""
    name, event_id, routing_key = delivery.subscriber, delivery.event_id, delivery.routing_key
    if outcome.action is Action.ACK:
        log.debug("subscriber %s: handled event %s (%s)", name, event_id, routing_key)
    elif outcome.action is Action.REQUEUE:
        log.warning(
            "subscriber %s: handler raised %s on event %s (%s): stopping the subscriber; "
            "the event goes back to its queue",
            name,
            type(raised).__name__,
            event_id,
            routing_key,
        )
    elif outcome.action is Action.RETRY:
        log.info(
            "subscriber %s: event %s (%s) will be retried in %.1f s (retry %d of %d)",
            name,
            event_id,
            routing_key,
            outcome.delay,
            retries + 1,
            max_retries,
        )
    else:
        # outcome.reason is valid, bounded text: a lone surrogate in the exception's
        # message cannot break the log line.
        log.error(
            "subscriber %s: event %s (%s) %s: %s: %s; %s",
            name,
            event_id,
            routing_key,
            why,
            outcome.exception_type,
            outcome.reason,
            fate(outcome.action, delivery.dead_letter_queue),
            exc_info=(type(raised), raised, raised.__traceback__)
            if isinstance(raised, Exception)
            else None,
        )


def consuming(policy: Policy, binding_keys: tuple[str, ...], partitions: int = 0) -> str:
    """The INFO line a subscriber logs per registration when it starts consuming.

    It says what becomes of a failed event, since the defaults (as in 3.x) drop it.
    """
    retries = (
        f"a Retry is tried again up to {policy.max_retries} times"
        if policy.max_retries
        else "no retries (max_retries=0: a Retry drops the event)"
    )
    failures = (
        f"failed events go to {policy.subscriber}-dl"
        if policy.dead_letter
        else "failed events are dropped (dead_letter=False)"
    )
    queues = (
        f"its {partitions} partitions {policy.subscriber}-p* (ordered by domain_object_id; "
        "a Retry is held in the process)"
        if partitions
        else f"queue {policy.subscriber}"
    )
    return (
        f"subscriber {policy.subscriber} consuming {queues} for "
        f"{', '.join(binding_keys)}: {retries}; {failures}"
    )
