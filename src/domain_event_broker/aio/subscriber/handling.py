"""One delivery through its async handler: read the event, await the handler, decide, log, report.

Nothing here touches a channel: the outcome goes to ``settling.py``. No input
ends :func:`handle` other than by returning an outcome (a bug of ours
included: never a dead worker), except the worker task's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from ... import observability
from ...core.handling import KINDS, Described, Unreadable, log_outcome, read_event
from ...core.outcome import (
    Action,
    Outcome,
    decide,
    failure,
    safe_text,
)
from ...events import DomainEvent
from ...observability import Handling, Occurrence
from .session import Delivery

log = logging.getLogger(__package__)


async def handle(delivery: Delivery, request_stop: Callable[[], None]) -> tuple[Outcome, int]:
    """(outcome, retries so far) of ``delivery``; reports it to metrics listeners."""
    started = time.perf_counter()
    try:
        outcome, retries = await _outcome(delivery, request_stop)
    except Exception as error:  # a bug of ours: never a dead worker
        reason = f"internal error: {safe_text(error)}"
        outcome = failure(delivery.registration.policy, error, reason)
        retries = 0
        log_outcome(
            log, _described(delivery, None), outcome, raised=error, why="could not be handled"
        )
    if observability.listening():
        _report(delivery, outcome, time.perf_counter() - started)
    return outcome, retries


async def _outcome(delivery: Delivery, request_stop: Callable[[], None]) -> tuple[Outcome, int]:
    registration = delivery.registration
    message = delivery.message
    event = read_event(message.body, message.headers, registration.policy)
    if isinstance(event, Unreadable):
        log_outcome(
            log, _described(delivery, None), event.outcome, raised=event.error, why=event.why
        )
        return event.outcome, 0
    event.retries += delivery.held_retries
    raised = await _call_handler(
        delivery, Handling(registration.topology.name, event, message.headers)
    )
    outcome = decide(registration.policy, event.retries, raised)
    if outcome.action is Action.ACK and not log.isEnabledFor(logging.DEBUG):
        return outcome, event.retries  # the hot path: no log line, no tuple built
    log_outcome(
        log,
        _described(delivery, event),
        outcome,
        retries=event.retries,
        max_retries=registration.policy.max_retries,
        raised=raised,
    )
    if outcome.action is Action.REQUEUE:
        request_stop()
    return outcome, event.retries


def _described(delivery: Delivery, event: DomainEvent | None) -> Described:
    topology = delivery.registration.topology
    message = delivery.message
    if event is not None:
        return Described(
            topology.name, event.uuid_string, event.routing_key, topology.dead_letter_queue
        )
    routing_key = topology.event_routing_key(message.routing_key or "", message.headers)
    return Described(topology.name, message.message_id, routing_key, topology.dead_letter_queue)


async def _call_handler(delivery: Delivery, handling: Handling) -> BaseException | None:
    """What the handler raised (None when it returned)."""
    try:
        await observability.call_async_handler(delivery.registration.handler, handling)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and being_cancelled(task):
            raise  # we are being cancelled: unsettled, RabbitMQ redelivers it
        return RuntimeError("the handler was cancelled")
    except BaseException as error:  # the rule: any handler failure has an outcome
        return error
    return None


def _report(delivery: Delivery, outcome: Outcome, seconds: float) -> None:
    kind = KINDS.get(outcome.action)
    if kind is None:
        return
    topology = delivery.registration.topology
    message = delivery.message
    observability.notify(
        Occurrence(
            kind,
            topology.event_routing_key(message.routing_key or "", message.headers),
            message.message_id,
            topology.name,
            seconds,
        )
    )


#: Worker tasks the subscriber itself is cancelling (stopping). A CancelledError
#: raised in one of them while its handler runs is the stop, not the handler's.
_stopping: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def stopping(task: asyncio.Task[Any]) -> None:
    """Note that the subscriber is about to cancel its worker ``task``."""
    _stopping.add(task)


def being_cancelled(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` itself is being cancelled (not just something its handler awaited).

    Python 3.10 has no ``Task.cancelling()``: there, only the subscriber's own note
    tells; a handler's own CancelledError is then a failure, not a dead worker.
    """
    if task in _stopping:
        return True
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and bool(cancelling())
