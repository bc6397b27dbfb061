"""The worker pool: threads that run handlers, so heartbeats flow while a handler is slow.

Each worker takes a delivery, turns it into an outcome (``handling.handle``,
which returns for every input) and hands both back through ``on_done``. A
worker ends only when told to; each has an event loop of its own for
``async def`` handlers (see ``handlers.HandlerRunner``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.acks import Ticket
from ..core.outcome import REQUEUE, Outcome, failure, fate, safe_text
from ..handlers import HandlerRunner
from .delivery import Delivery
from .handling import StopRequest, handle

log = logging.getLogger(__package__)

Done = Callable[[Delivery, Outcome], None]


@dataclass(eq=False)
class WorkerPool:
    """``size`` threads handling deliveries in the order they were submitted."""

    size: int
    _on_done: Done
    _is_current: Callable[[Ticket], bool]
    _request_stop: StopRequest
    _tasks: queue.SimpleQueue[Delivery | None] = field(default_factory=queue.SimpleQueue)
    _threads: list[threading.Thread] = field(default_factory=list)
    #: While draining, deliveries not started yet go back to their queue unhandled.
    draining: bool = False

    def start(self) -> None:
        self.draining = False
        self._tasks = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(self._tasks,),
                name=f"domain-event-worker-{number}",
                daemon=True,
            )
            for number in range(self.size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, delivery: Delivery) -> None:
        self._tasks.put(delivery)

    def stop(self) -> None:
        """Let every worker finish its delivery and end (without waiting for them)."""
        for _ in self._threads:
            self._tasks.put(None)
        self._threads = []

    def _work(self, tasks: queue.SimpleQueue[Delivery | None]) -> None:
        runner = HandlerRunner()
        try:
            while (delivery := tasks.get()) is not None:
                if not self._is_current(delivery.ticket):
                    continue  # its channel is gone; RabbitMQ redelivers the event
                self._on_done(delivery, self._outcome(delivery, runner))
        finally:
            runner.close()

    def _outcome(self, delivery: Delivery, runner: HandlerRunner) -> Outcome:
        if self.draining:
            return REQUEUE
        try:
            return handle(delivery, runner, self._request_stop)
        except BaseException as error:  # a bug of ours: never a dead worker, never a hot loop
            registration = delivery.registration
            outcome = failure(registration.policy, error, f"internal error: {safe_text(error)}")
            log.exception(
                "subscriber %s: could not handle event %s; %s",
                registration.name,
                delivery.event_id,
                fate(outcome.action, registration.topology.dead_letter_queue),
            )
            return outcome
