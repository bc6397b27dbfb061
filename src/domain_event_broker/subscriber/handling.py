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
from ..core.handling import KINDS, Described, Unreadable, log_outcome, read_event
from ..core.outcome import HANDLED, Action, Outcome, decide
from ..handlers import HandlerRunner
from .delivery import Delivery

log = logging.getLogger(__package__)

#: Called with the KeyboardInterrupt or SystemExit a handler raised.
StopRequest = Callable[[BaseException], None]


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
    event = read_event(delivery.body, headers, policy)
    if isinstance(event, Unreadable):
        log_outcome(log, _described(delivery), event.outcome, raised=event.error, why=event.why)
        return event.outcome
    event.retries += delivery.held_retries
    delivery.retries = event.retries
    delivery.event_id = event.uuid_string
    raised: BaseException | None = None
    try:
        runner.call(registration.handler, event, policy.subscriber, headers)
    except BaseException as error:  # every outcome is decided, none escapes
        raised = error
    outcome = decide(policy, event.retries, raised)
    if outcome is HANDLED:
        if log.isEnabledFor(logging.DEBUG):  # the hot path: no tuple built per event
            log_outcome(log, _described(delivery), outcome)
        return outcome
    log_outcome(
        log,
        _described(delivery),
        outcome,
        retries=event.retries,
        max_retries=policy.max_retries,
        raised=raised,
    )
    if outcome.action is Action.REQUEUE:
        assert raised is not None
        request_stop(raised)
    return outcome


def _described(delivery: Delivery) -> Described:
    topology = delivery.registration.topology
    return Described(
        topology.name, delivery.event_id, delivery.routing_key, topology.dead_letter_queue
    )
