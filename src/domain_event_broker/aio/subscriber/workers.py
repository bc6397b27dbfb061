"""The worker tasks: deliveries in arrival order -> handle -> settle.

The consumer callbacks put deliveries into one queue; ``concurrency`` tasks
take them. While draining (stopping), events not started yet go back to their
queue; a delivery of a lost channel is skipped (RabbitMQ redelivers it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ...core.history import Verdict
from ...core.ordering import object_key
from ...core.outcome import HANDLED, Action, Outcome
from .handling import handle, stopping
from .session import Delivery, Message, OnMessage, Registration, Session, Sessions
from .settling import Settler


class Workers:
    """``concurrency`` tasks handling the deliveries of the current session."""

    def __init__(self, sessions: Sessions, request_stop: Callable[[], None]) -> None:
        self.sessions = sessions
        self.settler = Settler(sessions, self.submit)
        self.request_stop = request_stop
        self.deliveries: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self.in_flight = 0
        self.draining = False
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, concurrency: int) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"domain-event-worker-{n}")
            for n in range(concurrency)
        ]

    async def stop(self) -> None:
        """Let the workers end (a second at most), then cancel what still runs."""
        self.draining = True
        for _ in self._tasks:
            self.deliveries.put_nowait(None)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 1.0)
        for task in self._tasks:
            stopping(task)
            task.cancel()

    def busy(self, session: Session) -> bool:
        """Events still being handled, waiting for a worker, or waiting for their ack."""
        return bool(
            self.in_flight or not self.deliveries.empty() or self.settler.acks_pending(session)
        )

    def submit(self, delivery: Delivery) -> None:
        """A delivery for the workers: a history event, an ordered subscriber's next event
        of an object, or a held retry now due."""
        self.deliveries.put_nowait(delivery)

    def on_message_of(self, registration: Registration, session: Session) -> OnMessage:
        deliveries = self.deliveries
        hand_over = self.sessions.hand_overs.get(registration.topology.name)

        ordered = bool(registration.topology.partitions)

        async def on_message(message: Message) -> None:
            if message.delivery_tag is not None:
                session.acks.delivered(message.delivery_tag)
            delivery = Delivery(registration, message, session.generation)
            if hand_over is not None and hand_over.live is not None:
                verdict = hand_over.live.live(message.headers, message.body)
                if verdict is not Verdict.HANDLE:  # handled from history already, or a marker
                    await self.settler.settle(delivery, HANDLED, None)
                    if verdict is Verdict.END:
                        await hand_over.passed_marker(session)
                    return
            if ordered:
                key = object_key(message.headers, message.body)
                delivery.object_key = None if key is None else (registration.topology.name, key)
                if session.line.arrive(delivery.object_key, delivery) is None:
                    return  # behind an earlier event of its object
            deliveries.put_nowait(delivery)

        return on_message

    async def _work(self) -> None:
        while True:
            delivery = await self.deliveries.get()
            if delivery is None:
                return
            if delivery.generation != self.sessions.generation:
                continue  # its channel is gone; RabbitMQ redelivers the event
            if self.draining:
                await self.settler.settle(delivery, Outcome(Action.REQUEUE), None)
                continue
            self.in_flight += 1
            try:
                outcome, retries = await handle(delivery, self.request_stop)
                await self.settler.settle(delivery, outcome, retries)
            finally:
                self.in_flight -= 1
