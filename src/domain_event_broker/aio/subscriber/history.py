"""An asyncio subscriber registered with ``start_from``: its hand-over from the archive (aio-pika).

The same steps as the pika driver's ``subscriber/history.py``, decided by
:mod:`domain_event_broker.core.history`: the lock, the saved progress, the
markers, the archive consumer, the switch to the live queue. History
deliveries go through the same workers, handler, retries and dead letters as
live ones; the settler acks them on the archive's channel and reports them here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ...core import archive as archive_rules
from ...core import history as rules
from ...core.acks import StreamAcks
from ...history import ARCHIVE_PREFETCH, ArchiveUnavailable, not_enabled
from ...topology import SubscriberTopology
from .. import topology as aio_topology
from ..connection import AIO_CONNECTION_LOST
from .session import Delivery, Message, Registration, Session

log = logging.getLogger(__package__)

#: Seconds a last save of the progress may take when a session ends.
SAVE_TIMEOUT = 5.0
#: Seconds between two looks at the progress (save when due, go live when complete).
WATCH_INTERVAL = 0.1

Submit = Callable[[Delivery], None]
ConsumeQueue = Callable[[], Awaitable[None]]


class AsyncHandOver:
    """One registration's way from the archive to its live queue, on aio-pika."""

    def __init__(self, topology: SubscriberTopology, start: rules.StartPoint) -> None:
        self.topology = topology
        self.start = start
        #: The hand-over is complete (or there was none to make): plain consuming.
        self.done = False
        self.reading: rules.ArchiveReading | None = None
        self.live: rules.LiveHandOver | None = None
        self._archive_channel: aio_pika.abc.AbstractChannel | None = None
        self._saving: aio_pika.abc.AbstractChannel | None = None
        self._progress_declared = False
        self._watch: asyncio.Task[None] | None = None
        self._acks = StreamAcks.for_prefetch(ARCHIVE_PREFETCH)
        #: Acks go out one at a time, in order (a multiple ack must not overtake an older one).
        self._ack_lock = asyncio.Lock()
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self._ack_scheduled = False
        self._reading_in: Session | None = None  # the session whose channel reads the archive

    async def attach(
        self,
        session: Session,
        registration: Registration,
        submit: Submit,
        consume_queue: ConsumeQueue,
    ) -> bool:
        """Take the lock and carry out the next step; False: another process holds the lock.

        ``submit`` hands a history delivery to the workers; ``consume_queue``
        starts consuming the registration's own queue, once that is the step.
        """
        connection = session.connection
        self.reading = None
        if not await _take_lock(connection, archive_rules.lock_queue_name(self.topology.name)):
            log.info("subscriber %s: another process reads its history", self.topology.name)
            return False
        self._saving = await connection.channel()  # publisher confirms: on
        self._progress_declared = False
        exists = await _exists(connection, self.topology.queue)
        step = rules.next_step(exists, progress := await self._load(connection))
        archive = archive_rules.archive_name(self.topology.exchange)
        for action in rules.hand_over_actions(
            step, progress, self.start, archive, self.topology.queue
        ):
            if isinstance(action, rules.RequireArchive):
                if not await _exists(connection, archive):
                    raise ArchiveUnavailable(not_enabled(self.topology.exchange))
            elif isinstance(action, rules.PublishMarker):
                await self._publish_marker(action.queue, action.marker)
            elif isinstance(action, rules.SaveProgress):
                await self._save(action.progress)
            elif isinstance(action, rules.DeclareTopology):
                await aio_topology.declare(connection, self.topology)
            elif isinstance(action, rules.ReadArchive):
                await self._read_archive(session, registration, action.progress, submit)
                self._watch = asyncio.create_task(self._watch_reading(session, consume_queue))
            elif isinstance(action, rules.Finish):
                await self._finish(connection)
            else:
                self.live = action.live
                await consume_queue()
        return True

    async def _read_archive(
        self, session: Session, registration: Registration, progress: rules.Progress, submit: Submit
    ) -> None:
        reading = self.reading = rules.ArchiveReading(progress, self.topology.binding_keys)
        offset: object = progress.start.offset if progress.resume_at is None else progress.resume_at
        prefetch = max(session.prefetch_count, ARCHIVE_PREFETCH)
        acks = self._acks = StreamAcks.for_prefetch(prefetch)
        self._ack_lock = asyncio.Lock()  # the archive channel's own delivery tags
        self._ack_scheduled = False
        self._reading_in = session
        channel = self._archive_channel = await session.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(
            archive_rules.archive_name(self.topology.exchange), ensure=False
        )

        async def on_archived(message: Message) -> None:
            offset = archive_rules.stream_offset_in(message.headers)
            key = message.routing_key or ""
            verdict = reading.archived(offset, key, message.headers, message.body)
            tag = message.delivery_tag or 0
            acks.delivered(tag)
            if verdict is not rules.Verdict.HANDLE:
                acks.done(tag)  # acked with the others
                self._ack_when_due(session, message)
                return
            submit(Delivery(registration, message, session.generation, offset, self._settled))

        await queue.consume(on_archived, arguments={"x-stream-offset": offset})
        log.info("subscriber %s: reading history from %s", self.topology.name, offset)

    def _settled(self, delivery: Delivery) -> None:
        """A history event is handled, dropped, or its copy stored: count it, ack in batches."""
        reading = self.reading
        if reading is None or delivery.offset is None:
            return
        reading.settled(delivery.offset)
        self._acks.done(delivery.message.delivery_tag or 0)
        if self._reading_in is not None:
            self._ack_when_due(self._reading_in, delivery.message)

    def _ack_when_due(self, session: Session, message: Message) -> None:
        """One multiple ack per batch done (``StreamAcks``): the stream's credit, not its
        progress, so it may pass events still being handled."""
        if self._ack_scheduled or not self._acks.due:
            return
        self._ack_scheduled = True
        task = asyncio.get_running_loop().create_task(self._send_ack(session, message, self._acks))
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    async def _send_ack(self, session: Session, message: Message, acks: StreamAcks) -> None:
        async with self._ack_lock:  # taken under the lock: the tags go out in order
            if acks is not self._acks:
                return  # a read of an earlier session: its channel is gone
            self._ack_scheduled = False
            tag, reading_channel = acks.take(), self._archive_channel
            if tag is None or reading_channel is None:
                return
            try:
                await message.channel.basic_ack(tag, multiple=True)
            except AIO_CONNECTION_LOST as error:
                if self._archive_channel is not reading_channel:
                    return  # history read meanwhile, or the session closing: no credit needed
                log.warning(
                    "subscriber %s: could not ack history events (%s); reading on from the "
                    "saved progress",
                    self.topology.name,
                    type(error).__name__,
                )
                session.lost.set()

    @property
    def in_flight(self) -> int:
        return 0 if self.reading is None else self.reading.in_flight

    async def _watch_reading(self, session: Session, consume_queue: ConsumeQueue) -> None:
        """Save the progress when due, log it, switch to the live queue once history is read."""
        saved_at = logged_at = time.monotonic()
        try:
            while not session.lost.is_set():
                reading = self.reading
                if reading is None:
                    return
                now = time.monotonic()
                if reading.complete:
                    await self._go_live(reading, consume_queue)
                    return
                if reading.save_due(now - saved_at):
                    await self._save(reading.checkpoint())
                    saved_at = now
                if now - logged_at >= rules.PROGRESS_LOG_INTERVAL:
                    logged_at = now
                    progress = rules.describe_progress(
                        self.topology.name, reading.checkpoint(saving=False)
                    )
                    log.info("%s", progress)
                await asyncio.sleep(WATCH_INTERVAL)
        except AIO_CONNECTION_LOST as error:
            log.warning("subscriber %s: history interrupted (%s)", self.topology.name, error)
            session.lost.set()

    async def _go_live(self, reading: rules.ArchiveReading, consume_queue: ConsumeQueue) -> None:
        progress, live = rules.going_live(reading)
        await self._save(progress)
        self.reading = None
        async with self._ack_lock:  # no ack on its way while the channel closes
            channel, self._archive_channel = self._archive_channel, None
        if channel is not None:
            await channel.close()
        self.live = live
        log.info(
            "subscriber %s: history read (%d events); consuming its queue",
            self.topology.name,
            progress.handled,
        )
        await consume_queue()

    async def passed_marker(self, session: Session) -> None:
        """The hand-over marker came out of the live queue: the hand-over is complete."""
        await self._finish(session.connection)
        log.info("subscriber %s: hand-over from history to its queue complete", self.topology.name)

    async def close(self) -> None:
        """The session ends: save how far history got (when the connection still works)."""
        if self._watch is not None:
            self._watch.cancel()
        reading, saving = self.reading, self._saving
        if reading is not None and saving is not None and not saving.is_closed:
            with contextlib.suppress(*AIO_CONNECTION_LOST, asyncio.TimeoutError):
                # A stop resumes here, not at the last periodic save.
                await asyncio.wait_for(self._save(reading.checkpoint()), SAVE_TIMEOUT)
        self._archive_channel = None
        self._saving = None

    async def _load(self, connection: aio_pika.abc.AbstractConnection) -> rules.Progress | None:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(
                archive_rules.progress_queue_name(self.topology.name), passive=True
            )
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        message = await queue.get(no_ack=False, fail=False)
        await channel.close()  # the progress goes back into its queue
        return None if message is None else rules.Progress.from_json(message.body)

    async def _save(self, progress: rules.Progress) -> None:
        channel = self._saving
        assert channel is not None
        name = archive_rules.progress_queue_name(self.topology.name)
        if not self._progress_declared:
            await channel.declare_queue(
                name, durable=True, arguments=archive_rules.PROGRESS_QUEUE_ARGUMENTS
            )
            self._progress_declared = True
        message = aio_pika.Message(
            progress.to_json(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await channel.default_exchange.publish(message, name, mandatory=True)

    async def _publish_marker(self, queue: str, marker: str) -> None:
        channel = self._saving
        assert channel is not None
        message = aio_pika.Message(
            b"",
            headers=dict(archive_rules.marker_headers(marker)),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, queue, mandatory=True)

    async def _finish(self, connection: aio_pika.abc.AbstractConnection) -> None:
        channel = await connection.channel()
        await channel.queue_delete(archive_rules.progress_queue_name(self.topology.name))
        await channel.queue_delete(archive_rules.lock_queue_name(self.topology.name))
        await channel.close()
        saving, self._saving = self._saving, None
        if saving is not None and not saving.is_closed:
            await saving.close()
        self.done = True


async def _take_lock(connection: aio_pika.abc.AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, exclusive=True)
    except aiormq.exceptions.ChannelLockedResource:
        return False  # another connection's exclusive queue
    with contextlib.suppress(*AIO_CONNECTION_LOST):
        await channel.close()
    return True


async def _exists(connection: aio_pika.abc.AbstractConnection, queue: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    await channel.close()
    return True
