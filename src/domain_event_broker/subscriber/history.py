"""A subscriber registered with ``start_from``: its hand-over from the archive to its queue (pika).

What to do is decided in :mod:`domain_event_broker.core.history` (read the
steps there); this module carries it out on the I/O thread: the lock, the
saved progress, the markers, the archive consumer, and the switch to the live
queue. History deliveries go through the same workers, handler, retries and
dead letters as live ones (``Session`` settles them through :meth:`HandOver.settled`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from .._pika import close_stream_channel
from ..connection import CONNECTION_LOST
from ..core import archive as archive_rules
from ..core import history as rules
from ..core.acks import AckBook, StreamAcks, Ticket
from ..core.rabbitmq import RabbitMQVersion
from ..history import ARCHIVE_PREFETCH, require_archive
from ..status import queue_counts
from ..topology import SubscriberTopology
from .delivery import Delivery, Registration

log = logging.getLogger(__package__)


class HistoryRewind(pika.exceptions.AMQPConnectionError):
    """A history event must be handled again (its copy was refused, or a stop came first).

    A stream takes no requeue: the session ends and the next one reads on from
    the saved progress, which never passes an event not settled.
    """


class Session(Protocol):
    """What a hand-over needs of the session it runs in (``session.Session``)."""

    connection: BlockingConnection
    book: AckBook
    prefetch_count: int
    rabbitmq: RabbitMQVersion
    submit: Callable[[Delivery], None]
    stopping: bool

    def consume_queue(self, registration: Registration) -> None: ...


class HandOver:
    """One registration's way from the archive to its live queue."""

    def __init__(self, topology: SubscriberTopology, start: rules.StartPoint) -> None:
        self.topology = topology
        self.start = start
        #: The hand-over is complete (or there was none to make): plain consuming.
        self.done = False
        self.reading: rules.ArchiveReading | None = None
        self.live: rules.LiveHandOver | None = None
        self._archive_channel: BlockingChannel | None = None
        #: Markers and the saves a step relies on: each waits for its confirm.
        self._saving: BlockingChannel | None = None
        #: The periodic saves while reading: sent without waiting (see :meth:`_save`).
        self._checkpoints: BlockingChannel | None = None
        self._progress_declared = False
        self._acks = StreamAcks.for_prefetch(ARCHIVE_PREFETCH)
        self._saved_at = 0.0
        self._logged_at = 0.0

    # Starting (I/O thread, on each session) -------------------------------------------------
    def attach(self, session: Session, registration: Registration) -> bool:
        """Take the lock and carry out the next step; False: another process holds the lock."""
        connection = session.connection
        self.reading = None
        if not _take_lock(connection, archive_rules.lock_queue_name(self.topology.name)):
            log.info("subscriber %s: another process reads its history", self.topology.name)
            return False
        self._saving = connection.channel()
        self._saving.confirm_delivery()
        self._checkpoints = None
        self._progress_declared = False
        exists = queue_counts(connection, self.topology.queue)[0] is not None
        step = rules.next_step(exists, progress := self._load(connection))
        archive = archive_rules.archive_name(self.topology.exchange)
        for action in rules.hand_over_actions(
            step, progress, self.start, archive, self.topology.queue
        ):
            if isinstance(action, rules.RequireArchive):
                require_archive(connection, self.topology.exchange)
            elif isinstance(action, rules.PublishMarker):
                self._publish_marker(action.queue, action.marker)
            elif isinstance(action, rules.SaveProgress):
                self._save(action.progress)
            elif isinstance(action, rules.DeclareTopology):
                self.topology.forget_declarations()
                self.topology.declare_on(connection, session.rabbitmq)
            elif isinstance(action, rules.ReadArchive):
                self._read_archive(session, registration, action.progress)
            elif isinstance(action, rules.Finish):
                self._finish(connection)
            else:
                self.live = action.live
                session.consume_queue(registration)
        return True

    def _read_archive(
        self, session: Session, registration: Registration, progress: rules.Progress
    ) -> None:
        connection = session.connection
        reading = self.reading = rules.ArchiveReading(progress, self.topology.binding_keys)
        offset: object = progress.start.offset if progress.resume_at is None else progress.resume_at
        prefetch = max(session.prefetch_count, ARCHIVE_PREFETCH)
        self._acks = StreamAcks.for_prefetch(prefetch)  # the archive channel's
        channel = self._archive_channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        channel.basic_consume(
            archive_rules.archive_name(self.topology.exchange),
            functools.partial(self._on_archived, session, registration, reading),
            arguments={"x-stream-offset": offset},
        )
        log.info("subscriber %s: reading history from %s", self.topology.name, offset)

    # History deliveries ---------------------------------------------------------------------
    def _on_archived(
        self,
        session: Session,
        registration: Registration,
        reading: rules.ArchiveReading,
        channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        headers = properties.headers or {}
        offset = archive_rules.stream_offset_in(headers)
        verdict = reading.archived(offset, str(method.routing_key), headers, body)
        tag = method.delivery_tag
        self._acks.delivered(tag)
        if verdict is not rules.Verdict.HANDLE:
            self._acks.done(tag)  # acked with the others (pump)
            return
        ticket = Ticket(session.book.generation, method.delivery_tag)
        delivery = Delivery(registration, ticket, str(method.routing_key), properties, body)
        delivery.offset = offset
        session.submit(delivery)

    def settled(self, delivery: Delivery) -> None:
        """A history event is handled, dropped, or its copy stored: ack it, count it."""
        assert delivery.offset is not None
        if self.reading is None:
            return
        self._acks.done(delivery.ticket.tag)
        self.reading.settled(delivery.offset)

    def abandon(self, offset: int) -> None:
        """Stopping: a history event goes unhandled; the saved progress stays before it."""
        if self.reading is not None:
            self.reading.abandoned(offset)

    def stop_reading(self) -> None:
        """Stopping: no more history deliveries (a stream's channel closes without rejects)."""
        channel, self._archive_channel = self._archive_channel, None
        if channel is not None:
            close_stream_channel(channel)

    @property
    def in_flight(self) -> int:
        return 0 if self.reading is None else self.reading.in_flight

    def pump(self, session: Session, registration: Registration, now: float) -> None:
        """After each settle: save progress when due, log it, switch to live when complete."""
        reading = self.reading
        if reading is None:
            return
        self._send_acks()
        if reading.complete:
            progress, live = rules.going_live(reading)
            self._save(progress, confirmed=True)
            self._log(progress)
            self.reading = None
            self.stop_reading()
            self.live = live
            if session.stopping:
                return  # the next start consumes the queue up to the marker (Step.FINISH)
            log.info(
                "subscriber %s: history read (%d events); consuming its queue",
                self.topology.name,
                progress.handled,
            )
            session.consume_queue(registration)
            return
        if reading.save_due(now - self._saved_at):
            self._save(reading.checkpoint(), confirmed=False)
            self._saved_at = now
        if now - self._logged_at >= rules.PROGRESS_LOG_INTERVAL:
            self._logged_at = now
            self._log(reading.checkpoint(saving=False))

    def _send_acks(self) -> None:
        """Give the archive's channel credit: one multiple ack per batch done (see StreamAcks)."""
        channel = self._archive_channel
        if channel is None:
            return
        tag = self._acks.take()
        if tag is not None:
            channel.basic_ack(tag, multiple=True)

    def passed_marker(self, connection: BlockingConnection) -> None:
        """The hand-over marker came out of the live queue: the hand-over is complete."""
        self._finish(connection)
        log.info("subscriber %s: hand-over from history to its queue complete", self.topology.name)

    def rewind(self) -> None:
        raise HistoryRewind(
            f"subscriber {self.topology.name}: a history event goes back; reading on from "
            "the saved progress"
        )

    def close(self) -> None:
        """The session ends: save how far history got (when the connection still works)."""
        reading, channel, self._archive_channel = self.reading, self._archive_channel, None
        if channel is not None:
            close_stream_channel(channel)
        if reading is not None and self._saving is not None and self._saving.is_open:
            with contextlib.suppress(*CONNECTION_LOST):
                # A stop resumes here, not at the last save.
                self._save(reading.checkpoint(), confirmed=True)

    # Progress, markers, lock ----------------------------------------------------------------
    def _log(self, progress: rules.Progress) -> None:
        log.info("%s", rules.describe_progress(self.topology.name, progress))

    def _load(self, connection: BlockingConnection) -> rules.Progress | None:
        name = archive_rules.progress_queue_name(self.topology.name)
        if queue_counts(connection, name)[0] is None:
            return None
        channel = connection.channel()
        method, _, body = channel.basic_get(name)  # left unacked: back in the queue at close
        channel.close()
        if method is None or body is None:
            return None
        return rules.Progress.from_json(body)

    def _save(self, progress: rules.Progress, confirmed: bool = True) -> None:
        """Into ``N-history`` (it keeps the last one); ``confirmed``: once the broker has it.

        A periodic save while reading goes out without waiting: a confirm would
        stop the I/O thread (and every history delivery) for a disk write, and a
        lost one only means a resume from the save before it. The saves that
        mark a step wait: they go through the periodic saves' channel first, so
        that no periodic save sent earlier can land after them (a channel's
        messages reach a queue in order), then through the confirming channel.
        """
        channel = self._saving
        assert channel is not None
        name = archive_rules.progress_queue_name(self.topology.name)
        if not self._progress_declared:
            channel.queue_declare(
                name, durable=True, arguments=archive_rules.PROGRESS_QUEUE_ARGUMENTS
            )
            self._progress_declared = True
        body, persistent = progress.to_json(), pika.BasicProperties(delivery_mode=2)
        checkpoints = self._checkpoints
        if not confirmed:
            if checkpoints is None or not checkpoints.is_open:
                checkpoints = self._checkpoints = channel.connection.channel()
            checkpoints.basic_publish("", name, body, persistent)
        else:
            if checkpoints is not None and checkpoints.is_open:
                checkpoints.basic_publish("", name, body, persistent)
            channel.basic_publish("", name, body, persistent, mandatory=True)
        self._saved_at = time.monotonic()

    def _publish_marker(self, queue: str, marker: str) -> None:
        channel = self._saving
        assert channel is not None
        properties = pika.BasicProperties(
            delivery_mode=2, headers=archive_rules.marker_headers(marker)
        )
        channel.basic_publish("", queue, b"", properties, mandatory=True)

    def _finish(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        channel.queue_delete(archive_rules.progress_queue_name(self.topology.name))
        channel.queue_delete(archive_rules.lock_queue_name(self.topology.name))
        channel.close()
        for used in (self._saving, self._checkpoints):
            if used is not None and used.is_open:
                used.close()
        self._saving = self._checkpoints = None
        self.done = True


def _take_lock(connection: BlockingConnection, name: str) -> bool:
    channel = connection.channel()
    try:
        channel.queue_declare(name, exclusive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        if (
            error.reply_code == archive_rules.RESOURCE_LOCKED
        ):  # another connection's exclusive queue
            return False
        raise
    channel.close()
    return True
