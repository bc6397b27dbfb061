"""One delivery through its handler: read the event, call the handler, decide, log, report.

Runs on a worker thread. Nothing here touches a channel: the outcome goes back
to the I/O thread, which acks, stores a copy or requeues (see ``session.py``).
No input ends this function other than by returning an outcome: a body that
is not an event, any ``BaseException`` from the handler, a ``Retry`` the
broker cannot take (``Retry`` refuses it at construction: a failure).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .. import observability
from ..core.outcome import (
    HANDLED,
    Action,
    Outcome,
    decide,
    failure,
    fate,
    parse_event,
    safe_text,
    undecodable,
)
from ..errors import InvalidEvent
from ..handlers import HandlerRunner
from .delivery import Delivery

log = logging.getLogger(__package__)

#: Called with the KeyboardInterrupt or SystemExit a handler raised.
StopRequest = Callable[[BaseException], None]

#: The metrics name of each outcome (sync and asyncio subscribers report the same).
KINDS = {
    Action.ACK: "handled",
    Action.RETRY: "retried",
    Action.DEAD_LETTER: "dead_lettered",
    Action.DROP: "dropped",
}


def handle(delivery: Delivery, runner: HandlerRunner, request_stop: StopRequest) -> Outcome:
    """The outcome of handling ``delivery``; reports it to metrics listeners."""
    if not observability.listening():  # the hot path: nothing to time, nobody to tell
        return _outcome(delivery, runner, request_stop)
    started = time.perf_counter()
    outcome = _outcome(delivery, runner, request_stop)
    kind = KINDS.get(outcome.action)
    if kind is not None:
        observability.notify(
            observability.Occurrence(
                kind,
                delivery.routing_key,
                delivery.event_id,
                delivery.registration.name,
                time.perf_counter() - started,
            )
        )
    return outcome


def _outcome(delivery: Delivery, runner: HandlerRunner, request_stop: StopRequest) -> Outcome:
    registration = delivery.registration
    policy = registration.policy
    headers = delivery.properties.headers
    try:
        event = parse_event(delivery.body, headers, policy.subscriber)
    except InvalidEvent as error:
        outcome = undecodable(policy, error)
        _log_failure(delivery, "is not a domain event", outcome, None)
        return outcome
    except Exception as error:  # a header or body nobody foresaw: still never a dead worker
        outcome = failure(policy, error, safe_text(error))
        _log_failure(delivery, "could not be read", outcome, error)
        return outcome
    delivery.retries = event.retries
    delivery.event_id = event.uuid_string
    raised: BaseException | None = None
    try:
        runner.call(registration.handler, event, policy.subscriber, headers)
    except BaseException as error:  # every outcome is decided, none escapes
        raised = error
    outcome = decide(policy, event.retries, raised)
    if outcome is HANDLED:
        log.debug(
            "subscriber %s: handled event %s (%s)",
            policy.subscriber,
            delivery.event_id,
            delivery.routing_key,
        )
    elif outcome.action is Action.REQUEUE:
        assert raised is not None
        log.warning(
            "subscriber %s: handler raised %s on event %s (%s): stopping the subscriber; "
            "the event goes back to its queue",
            policy.subscriber,
            type(raised).__name__,
            delivery.event_id,
            delivery.routing_key,
        )
        request_stop(raised)
    elif outcome.action is Action.RETRY:
        log.info(
            "subscriber %s: event %s (%s) will be retried in %.1f s (retry %d of %d)",
            policy.subscriber,
            delivery.event_id,
            delivery.routing_key,
            outcome.delay,
            event.retries + 1,
            policy.max_retries,
        )
    else:
        _log_failure(delivery, "failed", outcome, raised)
    return outcome


def _log_failure(
    delivery: Delivery, what: str, outcome: Outcome, error: BaseException | None
) -> None:
    topology = delivery.registration.topology
    # outcome.reason is valid, bounded text: a lone surrogate in the exception's
    # message cannot break the log line.
    log.error(
        "subscriber %s: event %s (%s) %s: %s: %s; %s",
        topology.name,
        delivery.event_id,
        delivery.routing_key,
        what,
        outcome.exception_type,
        outcome.reason,
        fate(outcome.action, topology.dead_letter_queue),
        exc_info=(type(error), error, error.__traceback__)
        if isinstance(error, Exception)
        else None,
    )
