"""What becomes of one delivery: a pure decision, shared by every consumer.

The sync :class:`~domain_event_broker.Subscriber`, the asyncio subscriber and
the in-memory test broker all decide here, so that one rule holds everywhere:
each event ends handled, waiting for a retry, in the dead-letter queue, dropped
with an error log (no dead-letter queue), or back in its own queue. Nothing in
this module does I/O; the consumers store copies and ack around it.

>>> policy = Policy("mailer", max_retries=1, dead_letter=True)
>>> decide(policy, retries=0, raised=Retry(2.5))
Outcome(action=<Action.RETRY: 'retry'>, delay=2.5, exception_type='', reason='')
>>> decide(policy, retries=1, raised=Retry(2.5)).action
<Action.DEAD_LETTER: 'dead-letter'>
"""

from __future__ import annotations

import enum
import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import MAX_RETRY_DELAY, InvalidEvent, Retry
from ..events import DomainEvent
from .topology import (
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    RETRIES_HEADER,
    TRACEBACK_HEADER,
    VERSION_HEADER,
    legacy_wait_queue_prefix,
)

#: Bytes of exception text kept in a dead letter's headers. A frame's headers
#: must fit in RabbitMQ's frame_max (128 KiB by default, 4 KiB at the least).
MAX_REASON_BYTES = 2000
#: Bytes of traceback kept in a dead letter's headers: its end, where it was raised.
MAX_TRACEBACK_BYTES = 4096


class Action(enum.Enum):
    ACK = "ack"  # handled
    RETRY = "retry"  # store a delayed copy in a wait queue, then ack
    DEAD_LETTER = "dead-letter"  # store a copy with failure headers in N-dl, then ack
    DROP = "drop"  # failed, and the subscriber keeps no dead letters: ack, log an error
    REQUEUE = "requeue"  # back into its own queue, to be tried again later


def fate(action: Action, dead_letter_queue: str) -> str:
    """What became of a failed event, for the log line that reports it."""
    if action is Action.DEAD_LETTER:
        return f"moved to dead-letter queue {dead_letter_queue}"
    return "dropped (register with dead_letter=True to keep failed events)"


@dataclass(frozen=True)
class Policy:
    """What a subscriber's registration says about failed events."""

    subscriber: str
    max_retries: int = 0
    dead_letter: bool = False


@dataclass(frozen=True)
class Outcome:
    action: Action
    delay: float = 0.0  # seconds, for RETRY
    exception_type: str = ""  # for DEAD_LETTER and DROP
    reason: str = ""  # for DEAD_LETTER and DROP: valid, bounded text
    #: For DEAD_LETTER and DROP: where it was raised (the last MAX_TRACEBACK_BYTES).
    #: Not part of the outcome's identity: the same failure from another line is alike.
    traceback: str = field(default="", compare=False, repr=False)

    @property
    def failed(self) -> bool:
        return self.action in (Action.DEAD_LETTER, Action.DROP)


HANDLED = Outcome(Action.ACK)
REQUEUE = Outcome(Action.REQUEUE)


def decide(policy: Policy, retries: int, raised: BaseException | None) -> Outcome:
    """The outcome of a handler that returned (``raised`` is None) or raised ``raised``.

    ``retries``: earlier deliveries of the event to this subscriber.
    ``KeyboardInterrupt`` and ``SystemExit`` ask the process to stop: the event
    goes back to its queue. Any other ``BaseException`` is a failure like an
    exception (as in 3.x).
    """
    if raised is None:
        return HANDLED
    if isinstance(raised, (KeyboardInterrupt, SystemExit)):
        return REQUEUE
    if isinstance(raised, Retry):
        delay = _retry_delay(raised)
        if delay is None:
            # A subclass that skipped Retry.__init__ (or changed .delay later).
            return failure(
                policy, raised, f"Retry without a valid delay: {getattr(raised, 'delay', None)!r}"
            )
        if retries < policy.max_retries:
            return Outcome(Action.RETRY, delay=delay)
        return failure(policy, raised, f"exceeded max_retries ({policy.max_retries})")
    return failure(policy, raised, safe_text(raised))


def _retry_delay(retry: Retry) -> float | None:
    delay = getattr(retry, "delay", None)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        return None
    if not math.isfinite(delay) or not 0 <= delay <= MAX_RETRY_DELAY:
        return None
    return float(delay)


def undecodable(policy: Policy, error: InvalidEvent) -> Outcome:
    """The outcome of a body that is not an event: never handled, kept when it can be."""
    return failure(policy, error, safe_text(error))


def failure(policy: Policy, error: BaseException, reason: str) -> Outcome:
    action = Action.DEAD_LETTER if policy.dead_letter else Action.DROP
    return Outcome(
        action,
        exception_type=qualified_name(error),
        reason=bounded(reason),
        traceback=traceback_text(error),
    )


def traceback_text(error: BaseException) -> str:
    """Where ``error`` was raised: file, line and function of each frame, then the error.

    Without the source lines: reading them is file I/O, and the file and line
    name them. The last :data:`MAX_TRACEBACK_BYTES` are kept: the innermost
    frames, where it was raised.
    """
    lines = ["Traceback (most recent call last):"]
    for frame, line in traceback.walk_tb(error.__traceback__):
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {line}, in {code.co_name}')
    lines.append(f"{qualified_name(error)}: {safe_text(error)}")
    return bounded_tail("\n".join(lines), MAX_TRACEBACK_BYTES)


def bounded_tail(text: str, limit: int) -> str:
    """The end of ``text`` as valid UTF-8 of at most ``limit`` bytes."""
    data = text.encode("utf-8", "replace")
    if len(data) > limit:
        data = data[len(data) - limit :]
    return data.decode("utf-8", "ignore")


def parse_event(body: bytes, headers: Mapping[str, Any] | None, subscriber: str) -> DomainEvent:
    """The event in a delivery, with ``retries`` counted; raises :class:`InvalidEvent`."""
    event = DomainEvent.from_json(body)
    event.retries = retries_of(headers, subscriber)
    if headers and VERSION_HEADER in headers:
        event.version = header_count(headers[VERSION_HEADER]) or None
    return event


def retries_of(headers: Mapping[str, Any] | None, subscriber: str) -> int:
    """How many times a message was delivered to ``subscriber`` before.

    Our own header counts retries; RabbitMQ 4.x ignores ``x-death`` headers that
    a client sets, so ``x-death`` is read only for messages that releases 2.x-3.x
    retried, summing the expiries from every wait queue of this subscriber (the
    old library read the first entry only, and miscounted mixed delays).
    A header another publisher set to nonsense counts as 0, never crashes.
    """
    if not isinstance(headers, Mapping):
        return 0
    counted = headers.get(RETRIES_HEADER)
    if counted is not None:
        return header_count(counted)
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return 0
    prefix = legacy_wait_queue_prefix(subscriber)
    retries = 0
    for death in deaths:
        if not isinstance(death, Mapping):
            continue
        if _text(death.get("queue")).startswith(prefix) and _text(death.get("reason")) == "expired":
            retries += header_count(death.get("count", 1))
    return retries


def header_count(value: object) -> int:
    """A count from a header another publisher may have set to anything (0 then)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        number: int = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), 2**31 - 1)


def retry_headers(headers: Mapping[str, Any] | None, retries: int) -> dict[str, Any]:
    """Headers of the delayed copy of an event delivered ``retries`` times before."""
    copied = dict(headers) if isinstance(headers, Mapping) else {}
    copied[RETRIES_HEADER] = retries + 1
    return copied


def failure_headers(
    headers: Mapping[str, Any] | None,
    outcome: Outcome,
    subscriber: str,
    retries: int,
    failed_at: str,
) -> dict[str, Any]:
    """Headers of a dead letter: what failed, where, when and how often it was retried."""
    copied = dict(headers) if isinstance(headers, Mapping) else {}
    copied[RETRIES_HEADER] = retries
    copied[FAILED_SUBSCRIBER_HEADER] = subscriber
    copied[EXCEPTION_TYPE_HEADER] = bounded(outcome.exception_type)
    copied[EXCEPTION_MESSAGE_HEADER] = bounded(outcome.reason)
    copied[FAILED_AT_HEADER] = failed_at
    if outcome.traceback:
        copied[TRACEBACK_HEADER] = outcome.traceback
    return copied


def safe_text(error: BaseException) -> str:
    """``str(error)``, whatever the exception's ``__str__`` does."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__}: str() failed>"


def bounded(text: str, limit: int = MAX_REASON_BYTES) -> str:
    """``text`` as valid UTF-8 (lone surrogates replaced) of at most ``limit`` bytes."""
    data = text.encode("utf-8", "replace")
    if len(data) > limit:
        data = data[:limit]
    return data.decode("utf-8", "ignore")


def qualified_name(error: BaseException) -> str:
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return bounded(name, 255)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
