"""Inspecting and replaying a subscriber's dead-letter queue.

A replayed event is published to the subscriber's retry exchange
(``<name>-retry``), which is bound to that subscriber's queue only: other
subscribers of the same event never see it again.
"""

from __future__ import annotations

import json
import logging
import select
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .connection import connect_blocking
from .copies import copy_properties
from .core.outcome import header_count
from .errors import InvalidEvent
from .events import DomainEvent, is_routing_key
from .settings import ConnectionSettings, resolve_url
from .status import queue_counts
from .topology import (
    ATTEMPT_HEADERS,
    EXCEPTION_MESSAGE_HEADER,
    EXCEPTION_TYPE_HEADER,
    FAILED_AT_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    REPLAYED_HEADER,
    TRACEBACK_HEADER,
    dead_letter_queue_name,
    retry_exchange_name,
    routing_key_in,
)

log = logging.getLogger(__name__)

RETRY = "retry"
LEAVE = "leave"
DISCARD = "discard"

MessageCallback = Callable[..., str]


def retry_event(body: bytes | None = None, **kwargs: Any) -> str:
    """The default message callback: replay every event."""
    return RETRY


def replay_event(
    queue_name: str,
    message_callback: MessageCallback = retry_event,
    connection_settings: ConnectionSettings = "",
) -> int:
    """Move one event from the dead-letter queue of subscriber ``queue_name`` back to it.

    ``message_callback(frame=..., header=..., body=...)`` decides: ``RETRY``
    (replay it), ``DISCARD`` (delete it) or ``LEAVE`` (keep it).

    Returns what 3.x returns: how many other events the dead-letter queue
    held when this one was taken (``message_count`` of basic.get-ok), whatever
    the callback decided. So ``LEAVE`` on the only event returns 0, although
    it stays there; 0 also when the queue was empty.

    >>> replay_event("welcome-mailer")  # doctest: +SKIP
    0
    """
    return _replay(queue_name, message_callback, connection_settings, limit=1).reported


def replay_all(
    queue_name: str,
    message_callback: MessageCallback = retry_event,
    connection_settings: ConnectionSettings = "",
) -> int:
    """Offer every event now in the dead-letter queue to ``message_callback`` once.

    Ends even when replayed events fail again at once: it handles at most the
    events that were there when it started. Returns what 3.x returns: the
    count :func:`replay_event` gives for the last event taken, i.e. how many
    other events were in the dead-letter queue then, counting those left
    earlier in this run (3.x put them back at once; here they are held until
    the end, so that each event is offered once).
    """
    return _replay(queue_name, message_callback, connection_settings, limit=None).reported


def replay_dead_letters(
    queue_name: str,
    message_callback: MessageCallback = retry_event,
    connection_settings: ConnectionSettings = "",
    *,
    all_events: bool = False,
) -> int:
    """Like :func:`replay_event` (or :func:`replay_all`), but return how many events
    are in the dead-letter queue afterwards, those left by the callback included.

    For operators (the ``domain-events`` command): 3.x's count of
    :func:`replay_event` leaves out the event just taken, also when it stays.
    """
    limit = None if all_events else 1
    return _replay(queue_name, message_callback, connection_settings, limit).still_waiting


@dataclass(frozen=True)
class _Replayed:
    #: What 3.x's replay_event/replay_all return (see there).
    reported: int
    #: Events in the dead-letter queue after the run.
    still_waiting: int


def _replay(
    queue_name: str,
    message_callback: MessageCallback,
    connection_settings: ConnectionSettings,
    limit: int | None,
) -> _Replayed:
    url = resolve_url(connection_settings)
    if url is None:
        return _Replayed(0, 0)
    dead_letter_queue = dead_letter_queue_name(queue_name)
    # An ordered subscriber's N-retry routes to its partitions, a plain one's to its queue.
    retry_exchange = retry_exchange_name(queue_name)
    connection = connect_blocking(url, "replay")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        waiting = _message_count(channel, dead_letter_queue, queue_name)
        to_visit = waiting if limit is None else min(limit, waiting)
        left: list[int] = []
        # basic.get-ok's message_count of the last event taken, plus the events
        # held back before it (3.x requeued those, so its count included them).
        remaining = 0
        for _ in range(to_visit):
            frame, header, body = channel.basic_get(dead_letter_queue)
            if frame is None or header is None or body is None:
                remaining = len(left)
                break
            remaining = int(frame.message_count or 0) + len(left)
            delivery_tag = int(frame.delivery_tag or 0)
            action = message_callback(frame=frame, header=header, body=body)
            if action == RETRY:
                republish(channel, retry_exchange, frame, header, body)
                channel.basic_ack(delivery_tag)
                log.info(
                    "replayed event %s (%s) to %s", header.message_id, frame.routing_key, queue_name
                )
            elif action == DISCARD:
                channel.basic_ack(delivery_tag)
                log.info(
                    "discarded dead-lettered event %s (%s) of %s",
                    header.message_id,
                    frame.routing_key,
                    queue_name,
                )
            elif action == LEAVE:
                # Held unacked until the end, so that the next basic_get moves on.
                left.append(delivery_tag)
            else:
                channel.basic_nack(delivery_tag, requeue=True)
                raise ValueError(
                    f"message_callback returned {action!r}; return RETRY, DISCARD or LEAVE"
                )
        # Counted before giving the left events back: the broker requeues them
        # asynchronously, and a count taken right after the nack can miss them.
        still_waiting = _message_count(channel, dead_letter_queue, queue_name) + len(left)
        for delivery_tag in left:
            channel.basic_nack(delivery_tag, requeue=True)
        return _Replayed(remaining, still_waiting)
    finally:
        if connection.is_open:
            connection.close()


def _message_count(channel: BlockingChannel, queue: str, subscriber: str) -> int:
    try:
        result = channel.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != 404:
            raise
        if queue_counts(channel.connection, subscriber)[0] is None:
            raise ValueError(
                f"there is no subscriber {subscriber!r} on this broker (no queue of that name "
                "in this vhost): check the name and --url"
            ) from None
        raise ValueError(
            f"subscriber {subscriber!r} has no dead-letter queue {queue!r}; "
            "register it with dead_letter=True"
        ) from None
    return int(result.method.message_count)


def republish(
    channel: BlockingChannel,
    retry_exchange: str,
    frame: Any,
    header: pika.BasicProperties,
    body: bytes,
) -> None:
    headers: dict[str, Any] = dict(header.headers or {})
    routing_key = routing_key_in(headers) or _routing_key_of(frame, body)
    # A replayed event starts afresh: retry count and failure details go.
    for name in ATTEMPT_HEADERS:
        headers.pop(name, None)
    headers[REPLAYED_HEADER] = header_count(headers.get(REPLAYED_HEADER, 0)) + 1
    channel.basic_publish(
        retry_exchange,
        routing_key,
        body,
        copy_properties(header, headers),
        mandatory=True,
    )


def _routing_key_of(frame: Any, body: bytes) -> str:
    """The routing key to replay a dead letter with, when no valid header names it.

    A letter put into the dead-letter queue through the default exchange (by a
    tool moving messages, say) carries the queue's name as its routing key; the
    event's own key is then the one in its body.
    """
    if frame.exchange == "":
        try:
            key = DomainEvent.from_json(body).routing_key
        except InvalidEvent:
            key = None
        if is_routing_key(key):
            return str(key)
    return str(frame.routing_key)


def interactive_callback(
    read_line: Callable[[float], str | None],
    write: Callable[[str], object],
    timeout: float = 30.0,
) -> MessageCallback:
    """A message callback that shows each event and asks (R)eplay, (D)iscard or (L)eave.

    ``read_line(timeout)`` returns the answer, or ``None`` when none came in
    time; then the event is left where it is.
    """

    def ask(frame: Any = None, header: Any = None, body: bytes = b"", **kwargs: Any) -> str:
        try:
            shown = json.dumps(json.loads(body), indent=4, sort_keys=True)
        except ValueError:
            shown = repr(body)
        write("Please specify action for:")
        write(shown)
        failure = (header.headers or {}) if header is not None else {}
        if EXCEPTION_TYPE_HEADER in failure:
            write(
                f"(failed in {failure.get(FAILED_SUBSCRIBER_HEADER)} at "
                f"{failure.get(FAILED_AT_HEADER)}: {failure.get(EXCEPTION_TYPE_HEADER)}: "
                f"{failure.get(EXCEPTION_MESSAGE_HEADER)})"
            )
        write("(R)eplay, (D)iscard or (L)eave?")
        answer = read_line(timeout)
        if answer is None:
            write("Timed out. Message left in queue.")
            return LEAVE
        choice = answer.strip()[:1].upper()
        while choice not in ("R", "D", "L"):
            # A typo must not decide: ask again (no answer in time leaves it).
            write(f"{answer.strip()!r} is none of R, D or L. (R)eplay, (D)iscard or (L)eave?")
            answer = read_line(timeout)
            if answer is None:
                write("Timed out. Message left in queue.")
                return LEAVE
            choice = answer.strip()[:1].upper()
        if choice == "R":
            write("Message is returned to worker queue.")
            return RETRY
        if choice == "D":
            write("Message has been discarded.")
            return DISCARD
        write("Message left in queue.")
        return LEAVE

    return ask


def read_stdin_line(timeout: float) -> str | None:
    """One line from standard input, or ``None`` after ``timeout`` seconds (or at EOF)."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        return None
    line = sys.stdin.readline()
    return line if line else None


@dataclass(frozen=True)
class DeadLetter:
    """One event in a dead-letter queue, as an operator looks at it."""

    routing_key: str
    body: bytes
    headers: dict[str, Any]

    @property
    def event(self) -> DomainEvent | None:
        """The event, or ``None`` when the body is not an event (that may be why it failed)."""
        try:
            return DomainEvent.from_json(self.body)
        except InvalidEvent:
            return None

    @property
    def failed_subscriber(self) -> str | None:
        return _optional_text(self.headers.get(FAILED_SUBSCRIBER_HEADER))

    @property
    def exception(self) -> str | None:
        """``"Type: message"`` of the failure, when the dead letter records it."""
        kind = _optional_text(self.headers.get(EXCEPTION_TYPE_HEADER))
        if kind is None:
            return None
        return f"{kind}: {_optional_text(self.headers.get(EXCEPTION_MESSAGE_HEADER)) or ''}"

    @property
    def failed_at(self) -> str | None:
        return _optional_text(self.headers.get(FAILED_AT_HEADER))

    @property
    def traceback(self) -> str:
        """Where the handler raised (its last 4 KiB), when the dead letter records it."""
        return _optional_text(self.headers.get(TRACEBACK_HEADER)) or ""


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def list_dead_letters(
    queue_name: str, connection_settings: ConnectionSettings = "", limit: int = 100
) -> list[DeadLetter]:
    """Look at up to ``limit`` events in the dead-letter queue of ``queue_name``, in order.

    Nothing is removed: the events are fetched without ack and go back when
    the connection closes.
    """
    url = resolve_url(connection_settings)
    if url is None:
        return []
    dead_letter_queue = dead_letter_queue_name(queue_name)
    connection = connect_blocking(url, "replay")
    try:
        channel = connection.channel()
        count = min(limit, _message_count(channel, dead_letter_queue, queue_name))
        letters = []
        for _ in range(count):
            frame, header, body = channel.basic_get(dead_letter_queue)
            if frame is None or header is None or body is None:
                break
            headers = dict(header.headers or {})
            letters.append(
                DeadLetter(routing_key_in(headers) or str(frame.routing_key), body, headers)
            )
        return letters
    finally:
        if connection.is_open:
            connection.close()
