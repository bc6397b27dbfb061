"""History: where a new subscriber starts in the archive, and how it hands over to its queue.

No I/O; both drivers and the in-memory broker take their decisions here
(docs/history.md tells the story). For a subscriber ``N`` registered with
``start_from`` whose queue does not exist yet (or whose hand-over is not done),
holding the lock ``N-history-lock``, :func:`hand_over_actions` lists what to do:
publish the *first marker* into the archive and save the progress (``N-history``)
before ``N`` is declared, so that every event that reaches ``N`` lies after that
marker in the archive; then publish the *hand-over marker* into both; read the
archive up to it (:class:`ArchiveReading`: the events handled after the first
marker are the *overlap*, in ``N`` too); then consume ``N`` skipping the overlap
up to the marker (:class:`LiveHandOver`). A kill resumes from the saved offset
with a new hand-over marker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Union

from ..errors import InvalidEvent
from ..events import DomainEvent
from .archive import BindingMatcher, marker_in, timestamp_of
from .start_point import CLOCK_MARGIN as CLOCK_MARGIN
from .start_point import FIRST as FIRST
from .start_point import StartFrom as StartFrom
from .start_point import StartPoint as StartPoint
from .start_point import as_utc as as_utc
from .start_point import registration_start as registration_start
from .start_point import start_point as start_point

#: Settled history events between two saves of the progress (and a save at least every second).
SAVE_EVERY = 500
SAVE_INTERVAL = 1.0
#: Seconds between two progress lines while history is read.
PROGRESS_LOG_INTERVAL = 5.0


class Phase(str, Enum):
    READING = "reading"  # reading the archive up to the hand-over marker
    LIVE = "live"  # consuming N up to the hand-over marker, skipping the overlap


@dataclass(frozen=True)
class Progress:
    """What ``N-history`` keeps: enough to resume a hand-over after a kill."""

    phase: Phase
    start: StartPoint
    first_marker: str
    #: The hand-over marker published last (None: not published yet).
    marker: str | None = None
    #: The archive offset to read next (None: from the start point).
    resume_at: int | None = None
    past_first_marker: bool = False
    overlap: tuple[str, ...] = ()
    handled: int = 0

    def to_json(self) -> bytes:
        record = {
            "phase": self.phase.value,
            "not_before": self.start.not_before,
            "first_marker": self.first_marker,
            "marker": self.marker,
            "resume_at": self.resume_at,
            "past_first_marker": self.past_first_marker,
            "overlap": list(self.overlap),
            "handled": self.handled,
        }
        return json.dumps(record).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Progress:
        try:
            record = json.loads(body)
            return cls(
                phase=Phase(record["phase"]),
                start=StartPoint(
                    None if record["not_before"] is None else float(record["not_before"])
                ),
                first_marker=str(record["first_marker"]),
                marker=None if record["marker"] is None else str(record["marker"]),
                resume_at=None if record["resume_at"] is None else int(record["resume_at"]),
                past_first_marker=bool(record["past_first_marker"]),
                overlap=tuple(str(item) for item in record["overlap"]),
                handled=int(record["handled"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"the saved history progress is unreadable: {error}") from None


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class Step(Enum):
    """What a subscriber registered with ``start_from`` does when it (re)connects."""

    BEGIN = "begin"  # a new subscriber: markers, progress, declare, read from the start point
    RESUME = "resume"  # a hand-over cut short while reading history: a new marker, read on
    FINISH = "finish"  # history read; consume N up to the marker, skipping the overlap
    NONE = "none"  # no history to read: an existing subscriber, or a finished hand-over


def next_step(queue_exists: bool, progress: Progress | None) -> Step:
    """Decide from whether ``N`` exists and what ``N-history`` holds.

    The progress is saved before ``N`` is declared, and deleted only once the
    hand-over is complete: ``N`` without a progress is a subscriber whose
    history is behind it (or one that never had any); a progress without ``N``
    is a start cut short before its queue existed, so it begins afresh.
    """
    if not queue_exists:
        return Step.BEGIN
    if progress is None:
        return Step.NONE
    return Step.RESUME if progress.phase is Phase.READING else Step.FINISH


@dataclass(frozen=True)
class RequireArchive:
    """Fail clearly when the exchange has no archive (before anything is declared)."""


@dataclass(frozen=True)
class PublishMarker:
    """Publish marker ``marker`` into ``queue`` (through the default exchange), confirmed."""

    queue: str
    marker: str


@dataclass(frozen=True)
class SaveProgress:
    progress: Progress  # into N-history, confirmed


@dataclass(frozen=True)
class DeclareTopology:
    """Declare the subscriber's queue, its bindings and the rest."""


@dataclass(frozen=True)
class ReadArchive:
    """Consume the archive from ``progress`` on (:class:`ArchiveReading` says what to handle)."""

    progress: Progress


@dataclass(frozen=True)
class ConsumeQueue:
    """Consume the subscriber's queue; with ``live``, skipping the overlap up to the marker."""

    live: LiveHandOver | None


@dataclass(frozen=True)
class Finish:
    """Delete the progress and release the lock: the hand-over is complete."""


Action = Union[  # noqa: UP007 (a runtime alias)
    RequireArchive, PublishMarker, SaveProgress, DeclareTopology, ReadArchive, ConsumeQueue, Finish
]


def hand_over_actions(
    step: Step,
    progress: Progress | None,
    start: StartPoint,
    archive: str,
    queue: str,
    new_marker: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[Action]:
    """What a driver does, in this order, for ``step`` (the lock is held).

    The order is the hand-over's guarantee (see the module's docstring): the
    first marker is in the archive and the progress saved before the queue
    exists; the hand-over marker goes into both once the queue is bound.
    """
    actions: list[Action] = []
    if step is Step.BEGIN:
        progress = Progress(Phase.READING, start, new_marker())
        actions += [
            RequireArchive(),
            PublishMarker(archive, progress.first_marker),
            SaveProgress(progress),
        ]
    actions.append(DeclareTopology())
    if step in (Step.BEGIN, Step.RESUME):
        assert progress is not None
        progress = replace(progress, marker=new_marker())
        assert progress.marker is not None
        return [
            *actions,
            SaveProgress(progress),
            PublishMarker(archive, progress.marker),
            PublishMarker(queue, progress.marker),
            ReadArchive(progress),
        ]
    if step is Step.FINISH:
        assert progress is not None and progress.marker is not None
        return [*actions, ConsumeQueue(LiveHandOver(progress.marker, frozenset(progress.overlap)))]
    return [*actions, Finish(), ConsumeQueue(None)]


def going_live(reading: ArchiveReading) -> tuple[Progress, LiveHandOver]:
    """History read and settled: the progress to save, and the live queue's filter."""
    progress = reading.checkpoint()
    assert progress.phase is Phase.LIVE and progress.marker is not None
    return progress, LiveHandOver(progress.marker, frozenset(progress.overlap))


class Verdict(Enum):
    HANDLE = "handle"
    SKIP = "skip"  # ack unhandled: not this subscriber's, before the start point, a marker
    END = "end"  # the hand-over marker: history is complete


@dataclass
class ArchiveReading:
    """The archive read of one hand-over: what to do with each message, and what to save."""

    progress: Progress
    binding_keys: tuple[str, ...]
    _in_flight: set[int] = field(default_factory=set)
    _overlap: set[str] = field(default_factory=set)
    _next: int | None = None  # the offset after the last one seen
    _ended: bool = False
    _unsaved: int = 0
    _handled: int = 0
    #: Given up unhandled (a stop): no longer waited for, but never passed by the progress.
    _abandoned: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._overlap = set(self.progress.overlap)
        self._next = self.progress.resume_at
        self._handled = self.progress.handled
        self._matches = BindingMatcher(self.binding_keys)

    def archived(self, offset: int, routing_key: str, headers: object, body: bytes) -> Verdict:
        """One message of the archive, in order."""
        if self._ended:
            return Verdict.SKIP  # prefetched behind the marker: read again by nobody
        self._next = offset + 1
        marker = marker_in(headers)
        if marker is not None:
            if marker == self.progress.first_marker:
                self.progress = replace(self.progress, past_first_marker=True)
            if marker == self.progress.marker:
                self._ended = True
                return Verdict.END
            return Verdict.SKIP
        if not self._matches(routing_key):
            return Verdict.SKIP
        # The body is read here only when a rule needs it (a start time, the overlap);
        # its timestamp alone without a parse where it can be (the workers parse it anyway).
        start, overlapping = self.progress.start, self.progress.past_first_marker
        if overlapping:
            event = _event_in(body)
            if event is not None and not start.admits(event.timestamp):
                return Verdict.SKIP
            if event is not None:
                self._overlap.add(event.uuid_string)
        elif start.not_before is not None:
            timestamp = timestamp_of(body)
            if timestamp is None:
                event = _event_in(body)
                timestamp = None if event is None else event.timestamp
            if timestamp is not None and not start.admits(timestamp):
                return Verdict.SKIP
        self._in_flight.add(offset)
        return Verdict.HANDLE

    def settled(self, offset: int) -> None:
        """A handled history event is acked (handled, dead-lettered, or its retry stored)."""
        self._in_flight.discard(offset)
        self._handled += 1
        self._unsaved += 1

    def abandoned(self, offset: int) -> None:
        """A history event goes unhandled (the subscriber stops): read it again next time."""
        self._in_flight.discard(offset)
        self._abandoned.add(offset)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def complete(self) -> bool:
        """Marker reached and every history event settled: time to go live."""
        return self._ended and not self._in_flight and not self._abandoned

    def save_due(self, seconds_since_save: float) -> bool:
        return self._unsaved >= SAVE_EVERY or (
            self._unsaved > 0 and seconds_since_save >= SAVE_INTERVAL
        )

    def checkpoint(self, saving: bool = True) -> Progress:
        """The progress to save now: resume at the oldest event not settled yet.

        ``saving=False``: only to show it (the count towards the next save goes on).
        """
        if saving:
            self._unsaved = 0
        pending = self._in_flight | self._abandoned
        resume_at = min(pending) if pending else self._next
        phase = Phase.LIVE if self.complete else Phase.READING
        return replace(
            self.progress,
            phase=phase,
            resume_at=resume_at,
            overlap=tuple(sorted(self._overlap)),
            handled=self._handled,
        )


@dataclass
class LiveHandOver:
    """Consuming ``N`` after history: skip the overlap; the marker completes the hand-over."""

    marker: str
    overlap: frozenset[str]
    passed: bool = False

    def live(self, headers: object, body: bytes) -> Verdict:
        found = marker_in(headers)
        if found is not None:
            if found == self.marker:
                self.passed = True
                return Verdict.END
            return Verdict.SKIP  # an earlier attempt's marker
        if self.overlap:
            event = _event_in(body)
            if event is not None and event.uuid_string in self.overlap:
                return Verdict.SKIP
        return Verdict.HANDLE


def _event_in(body: bytes) -> DomainEvent | None:
    try:
        return DomainEvent.from_json(body)
    except (InvalidEvent, ValueError, TypeError):
        return None


def describe_progress(name: str, progress: Progress) -> str:
    """The progress line a subscriber logs while it reads history."""
    where = "" if progress.resume_at is None else f" at archive offset {progress.resume_at}"
    return f"subscriber {name}: history {progress.handled} events handled{where}"
