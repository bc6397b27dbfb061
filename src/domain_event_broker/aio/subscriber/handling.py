"""One delivery through its async handler: read the event, await the handler, decide, log, report.

Nothing here touches a channel: the outcome goes to ``settling.py``. No input
ends :func:`handle` other than by returning an outcome (a bug of ours
included: never a dead worker), except the worker task's own cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ... import observability
from ...core.outcome import (
    Action,
    Outcome,
    decide,
    failure,
    fate,
    parse_event,
    safe_text,
    undecodable,
)
from ...errors import InvalidEvent
from ...observability import Handling, Occurrence
from ...subscriber.handling import KINDS
from ...topology import SubscriberTopology
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
        log.exception(
            "subscriber %s: could not handle event %s; %s",
            delivery.registration.topology.name,
            delivery.message.message_id,
            _fate(delivery.registration.topology),
        )
    if observability.listening():
        _report(delivery, outcome, time.perf_counter() - started)
    return outcome, retries


async def _outcome(delivery: Delivery, request_stop: Callable[[], None]) -> tuple[Outcome, int]:
    registration = delivery.registration
    message = delivery.message
    name = registration.topology.name
    try:
        event = parse_event(message.body, message.headers, name)
    except InvalidEvent as error:
        outcome = undecodable(registration.policy, error)
        log.error(
            "subscriber %s: message %s (%s) is not a domain event: %s; %s",
            name,
            message.message_id,
            message.routing_key,
            outcome.reason,
            _fate(registration.topology),
        )
        return outcome, 0
    raised = await _call_handler(delivery, Handling(name, event, message.headers))
    outcome = decide(registration.policy, event.retries, raised)
    _log_outcome(delivery, outcome, raised, event.uuid_string, event.routing_key, event.retries)
    if outcome.action is Action.REQUEUE:
        request_stop()
    return outcome, event.retries


async def _call_handler(delivery: Delivery, handling: Handling) -> BaseException | None:
    """What the handler raised (None when it returned)."""
    try:
        await observability.call_async_handler(delivery.registration.handler, handling)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and _cancelling(task):
            raise  # we are being cancelled: unsettled, RabbitMQ redelivers it
        return RuntimeError("the handler was cancelled")
    except BaseException as error:  # the rule: any handler failure has an outcome
        return error
    return None


def _log_outcome(
    delivery: Delivery,
    outcome: Outcome,
    raised: BaseException | None,
    event_id: str,
    routing_key: str,
    retries: int,
) -> None:
    registration = delivery.registration
    name = registration.topology.name
    if outcome.action is Action.RETRY:
        log.info(
            "subscriber %s: event %s (%s) will be retried in %.1f s (retry %d of %d)",
            name,
            event_id,
            routing_key,
            outcome.delay,
            retries + 1,
            registration.policy.max_retries,
        )
    elif outcome.failed:
        log.error(
            "subscriber %s: handler failed on event %s (%s) with %s: %s; %s",
            name,
            event_id,
            routing_key,
            outcome.exception_type,
            outcome.reason,
            _fate(registration.topology),
        )
    elif outcome.action is Action.REQUEUE:
        log.warning(
            "subscriber %s: handler raised %s on event %s; stopping, the event goes back",
            name,
            type(raised).__name__,
            event_id,
        )


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


def _fate(topology: SubscriberTopology) -> str:
    return fate(
        Action.DEAD_LETTER if topology.dead_letter else Action.DROP, topology.dead_letter_queue
    )


def _cancelling(task: asyncio.Task[Any]) -> bool:
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return True if cancelling is None else bool(cancelling())
