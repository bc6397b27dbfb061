"""One connection's worth of consuming: the consume channel, its acks, its failure copies.

Top to bottom, on the I/O thread: RabbitMQ delivers (``_on_message``: note the
tag, hand the delivery to the workers); a worker's outcome comes back
(``settle``): handled or dropped -> due an ack; retry or dead-letter -> a copy
to store first; requeue -> nack. Copies stored -> due an ack; copies refused
-> nack after the pause. Then the acks that are due go out, as few frames as
the ack book allows. Lost with the connection, a session is never reused.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from ..core.acks import AckBook
from ..core.history import Verdict
from ..core.ordering import ObjectLine, object_key
from ..core.outcome import Action, Outcome
from ..core.rabbitmq import UNKNOWN, RabbitMQVersion
from ..core.spread import Membership
from .copies import FailureStore, close_quietly
from .delivery import Delivery, Registration
from .history import HandOver
from .spreading import PartitionShare


class ConsumerCancelled(pika.exceptions.AMQPConnectionError):
    """RabbitMQ cancelled a consumer (its queue was deleted): declare again and resume."""


class Session:
    """Consumes the registrations' queues on one connection and settles their deliveries."""

    def __init__(
        self,
        connection: BlockingConnection,
        channel: BlockingChannel,
        store: FailureStore,
        book: AckBook,
        submit: Callable[[Delivery], None],
        hand_overs: dict[str, HandOver] | None = None,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.store: FailureStore | None = store
        self.book = book
        self.submit = submit
        self._consumer_tags: list[str] = []
        self._registrations: list[Registration] = []
        #: Hand-overs from history of the registrations that have one, by name.
        self.hand_overs: dict[str, HandOver] = {} if hand_overs is None else hand_overs
        self._waiting_for_lock: list[Registration] = []
        #: Stopping: no new events are taken. An ordered subscriber's unstarted events
        #: then stay unacked until the channel closes; RabbitMQ returns them in order,
        #: together with the partition, to the next consumer (a nack now would come
        #: back to us, and a cancel would let the next consumer overtake them).
        self.stopping = False
        self.prefetch_count = 1
        self.rabbitmq: RabbitMQVersion = UNKNOWN
        #: Ordered subscribers: the events waiting behind an earlier one of their object.
        self.line: ObjectLine[Delivery] = ObjectLine()
        #: Ordered subscribers' retries, held unacked until due: (due, delivery).
        self._held_retries: list[tuple[float, Delivery]] = []
        self._left_for_close = 0
        #: Ordered registrations: their members (the loop's, kept), their share consumed here.
        self.memberships: dict[str, Membership] = {}
        self.shares: list[PartitionShare] = []

    @classmethod
    def open(
        cls,
        connection: BlockingConnection,
        book: AckBook,
        submit: Callable[[Delivery], None],
        prefetch_count: int,
        publish_timeout: float,
        hand_overs: dict[str, HandOver] | None = None,
        rabbitmq: RabbitMQVersion = UNKNOWN,
    ) -> Session:
        """Open the consume channel (and the copies' channel) of a new session on ``connection``."""
        book.reset()  # deliveries of an earlier channel are stale from here on
        store = FailureStore(connection, publish_timeout)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch_count)
        session = cls(connection, channel, store, book, submit, hand_overs)
        session.prefetch_count = prefetch_count
        session.rabbitmq = rabbitmq
        channel.add_on_cancel_callback(session._on_consumer_cancelled)
        return session

    def consume(self, registration: Registration) -> None:
        self._registrations.append(registration)
        hand_over = self.hand_overs.get(registration.name)
        if hand_over is not None and not hand_over.done:
            # It declares the topology and consumes the archive, the queue, or (when
            # another process holds the lock) nothing yet: tried again in housekeeping.
            if not hand_over.attach(self, registration):
                self._waiting_for_lock.append(registration)
            return
        self.consume_queue(registration)

    def consume_queue(self, registration: Registration) -> None:
        """Consume the registration's own queue (or partitions): the live events."""
        on_message = functools.partial(self._on_message, registration)
        if registration.topology.partitions:  # this process's share of them
            share = PartitionShare.join(self.channel, registration, self.memberships, on_message)
            self.shares.append(share)
            return
        for queue in registration.topology.consumed_queues:
            tag = self.channel.basic_consume(queue=queue, on_message_callback=on_message)
            self._consumer_tags.append(tag)

    def spread(self, now: float) -> bool:
        """Take new partitions of our share; True when some must be released (see loop.py)."""
        return any([share.tick(now) for share in self.shares])  # a list: every share ticks

    @property
    def unsettled(self) -> int:
        """Deliveries still to settle (not those left for the channel close to return)."""
        history = sum(hand_over.in_flight for hand_over in self.hand_overs.values())
        return self.book.unsettled - self._left_for_close + history

    # Delivery -> worker -> outcome ------------------------------------------------------
    def _on_message(
        self,
        registration: Registration,
        _channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        ticket = self.book.delivered(method.delivery_tag)
        hand_over = self.hand_overs.get(registration.name) if self.hand_overs else None
        if hand_over is not None and hand_over.live is not None:
            verdict = hand_over.live.live(properties.headers, body)
            if verdict is not Verdict.HANDLE:  # handled from history already, or a marker
                self.book.finished(ticket)
                if verdict is Verdict.END:
                    hand_over.passed_marker(self.connection)
                return
        # A copy back from a wait queue arrives with the queue's name as its routing key.
        routing_key = registration.topology.event_routing_key(
            method.routing_key, properties.headers
        )
        delivery = Delivery(registration, ticket, routing_key, properties, body)
        if registration.topology.partitions:
            key = object_key(properties.headers, body)
            delivery.object_key = None if key is None else (registration.name, key)
            if self.line.arrive(delivery.object_key, delivery) is None:
                return  # behind an earlier event of its object
        self.submit(delivery)

    def settle(self, completions: Iterable[tuple[Delivery, Outcome]], now: float) -> None:
        """Act on the workers' outcomes and on the failure copies' confirms, then ack."""
        assert self.store is not None
        for delivery, outcome in completions:
            if not self.book.is_current(delivery.ticket):
                continue  # its channel is gone; RabbitMQ redelivers the event
            if outcome.action in (Action.ACK, Action.DROP):  # a drop was logged by the worker
                self._finished(delivery)
            elif outcome.action is Action.REQUEUE:
                self._requeue(delivery)
            elif outcome.action is Action.RETRY and delivery.registration.topology.partitions:
                self._hold_retry(delivery, now + outcome.delay)
            else:
                self.store.submit(delivery, outcome)
        for delivery, stored in self.store.pump(now):
            if stored:
                self._finished(delivery)
            else:
                self._requeue(delivery)
        self._resume_due_retries(now)
        self._send_acks()
        for registration in self._registrations:
            hand_over = self.hand_overs.get(registration.name) if self.hand_overs else None
            if hand_over is not None:
                hand_over.pump(self, registration, now)

    def _finished(self, delivery: Delivery) -> None:
        if delivery.offset is None:
            self.book.finished(delivery.ticket)
        else:
            self.hand_overs[delivery.registration.name].settled(delivery)
        if delivery.object_key is not None:
            following = self.line.done(delivery.object_key)
            if following is not None:
                self.submit(following)

    def _hold_retry(self, delivery: Delivery, due: float) -> None:
        """An ordered subscriber's retry stays here, unacked: the later events of its
        object wait behind it; a process that dies meanwhile gives it back first."""
        delivery.held_retries += 1
        self._held_retries.append((due, delivery))
        self.connection.call_later(max(0.0, due - time.monotonic()), _nothing)  # wakes the loop

    def _resume_due_retries(self, now: float) -> None:
        if not self._held_retries:
            return
        due = [delivery for at, delivery in self._held_retries if at <= now]
        self._held_retries = [(at, delivery) for at, delivery in self._held_retries if at > now]
        for delivery in due:
            self.submit(delivery)

    def _requeue(self, delivery: Delivery) -> None:
        if delivery.offset is not None:
            # A stream takes no nack. Stopping: left unsettled, the saved progress stays
            # before it. Otherwise the session ends and history is read on from there.
            hand_over = self.hand_overs[delivery.registration.name]
            if not self.stopping:
                hand_over.rewind()
            hand_over.abandon(delivery.offset)
            return
        # Those waiting behind it go back too, in order: none may start before it.
        for returned in (delivery, *self.line.withdraw(delivery.object_key)):
            if self.stopping and returned.registration.topology.partitions:
                # Left unsettled in the book, so that no multiple ack covers it.
                self._left_for_close += 1
            elif self.book.settle_alone(returned.ticket):
                self.channel.basic_nack(returned.ticket.tag, requeue=True)

    def _send_acks(self) -> None:
        acks = self.book.take_acks()
        if acks.multiple_up_to is not None:
            self.channel.basic_ack(acks.multiple_up_to, multiple=True)
        for tag in acks.singles:
            self.channel.basic_ack(tag)

    # Stopping ---------------------------------------------------------------------------
    def cancel_consumers(self, leaving: bool = True) -> None:
        """Stopping: no new events (ordered subscribers keep their partitions until closed);
        ``leaving``: not only this session ends, so the others take our partitions now."""
        self.stopping = True
        for share in self.shares if leaving else ():
            share.leave()
        for hand_over in self.hand_overs.values():
            hand_over.stop_reading()
        for tag in self._consumer_tags:
            self.channel.basic_cancel(tag)
        self._consumer_tags = []

    @property
    def hands_over_partitions(self) -> bool:
        """Stopping with events of ordered partitions left unacked for the next process."""
        return self.stopping and any(r.topology.partitions for r in self._registrations)

    def release_held(self, now: float) -> None:
        """Stopping: originals waiting out a refusal pause go back to their queue now."""
        assert self.store is not None
        for delivery in self.store.release_held(now):
            self._requeue(delivery)
        held, self._held_retries = self._held_retries, []
        for _, delivery in held:
            self._requeue(delivery)

    def housekeeping(self, now: float) -> None:
        """Remove the wait queues this subscriber has long stopped using (if empty).

        A registration waiting for another process's history lock tries again.
        """
        waiting, self._waiting_for_lock = self._waiting_for_lock, []
        for registration in waiting:
            self._registrations.remove(registration)
            self.consume(registration)
        for registration in self._registrations:
            registration.topology.remove_idle_wait_queues(self.connection, now)

    def close_hand_overs(self) -> None:
        """Save how far each history read got (its own channel: the session's may be closing)."""
        for hand_over in self.hand_overs.values():
            hand_over.close()

    def close(self) -> None:
        self.close_hand_overs()
        close_quietly(self.store)
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            if self.channel.is_open:
                self.channel.close()

    def _on_consumer_cancelled(self, frame: Any) -> None:
        raise ConsumerCancelled(f"RabbitMQ cancelled consumer {frame.method.consumer_tag}")


def _nothing() -> None:
    pass
