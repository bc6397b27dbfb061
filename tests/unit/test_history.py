"""History without a broker: the start point, the step a restart takes, and the hand-over's rule."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.archive import (
    marker_headers,
    parse_bytes,
    parse_max_age,
)
from domain_event_broker.core.history import (
    ArchiveReading,
    ConsumeQueue,
    DeclareTopology,
    Finish,
    LiveHandOver,
    Phase,
    Progress,
    PublishMarker,
    ReadArchive,
    RequireArchive,
    SaveProgress,
    StartPoint,
    Step,
    Verdict,
    hand_over_actions,
    next_step,
    start_point,
)
from domain_event_broker.events import DomainEvent

NOW = 1_800_000_000.0
KEYS = ["order.placed", "order.paid", "user.registered"]


def test_a_timedelta_is_that_long_before_now() -> None:
    assert start_point(timedelta(hours=2), NOW).not_before == NOW - 7200


def test_a_naive_datetime_means_utc() -> None:
    naive = datetime(2027, 1, 14, 12, 0, 0)
    aware = naive.replace(tzinfo=timezone.utc)
    assert start_point(naive, NOW) == start_point(aware, NOW)
    assert start_point(aware, NOW).not_before == aware.timestamp()


def test_first_reads_the_whole_archive() -> None:
    point = start_point("first", NOW)
    assert point.offset == "first"
    assert point.admits(0.0)


@pytest.mark.parametrize("wrong", ["last", "yesterday", ""])
def test_another_word_is_refused(wrong: str) -> None:
    with pytest.raises(ValueError, match="'first', a datetime or a timedelta"):
        start_point(wrong, NOW)  # type: ignore[arg-type]


def test_the_future_and_another_type_are_refused() -> None:
    with pytest.raises(ValueError, match="not in the future"):
        start_point(timedelta(seconds=-1), NOW)
    with pytest.raises(ValueError, match="is in the future"):
        start_point(datetime.fromtimestamp(NOW + 60, timezone.utc), NOW)
    with pytest.raises(TypeError, match="not int"):
        start_point(3, NOW)  # type: ignore[arg-type]


@given(st.floats(min_value=10.0, max_value=4e9))
def test_the_stream_offset_starts_no_later_than_the_start_point(seconds: float) -> None:
    # Arrival times are whole seconds: reading starts early, the timestamp filter trims.
    point = StartPoint(seconds)
    offset = point.offset
    assert isinstance(offset, datetime)
    assert offset.timestamp() <= seconds - 1
    assert offset.timestamp() == math.floor(offset.timestamp())


def test_retention_and_sizes_are_checked() -> None:
    assert parse_max_age("30D") == "30D"
    assert parse_bytes("20GB") == 20 * 10**9
    assert parse_bytes("1024") == 1024
    for wrong in ("30", "D", "0D", "7 days"):
        with pytest.raises(ValueError):
            parse_max_age(wrong)
    with pytest.raises(ValueError):
        parse_bytes("lots")


progresses = st.builds(
    Progress,
    phase=st.sampled_from(Phase),
    start=st.builds(StartPoint, st.none() | st.floats(0, 4e9)),
    first_marker=st.text(min_size=1, max_size=8),
    marker=st.none() | st.text(min_size=1, max_size=8),
    resume_at=st.none() | st.integers(0, 2**40),
    past_first_marker=st.booleans(),
    overlap=st.lists(st.uuids().map(str), max_size=5).map(tuple),
    handled=st.integers(0, 10**9),
)


@given(progresses)
def test_progress_survives_its_queue(progress: Progress) -> None:
    assert Progress.from_json(progress.to_json()) == progress


def test_unreadable_progress_is_an_error_that_says_so() -> None:
    with pytest.raises(ValueError, match="progress is unreadable"):
        Progress.from_json(b'{"phase": "reading"}')


@pytest.mark.parametrize(
    ("queue_exists", "phase", "step"),
    [
        (False, None, Step.BEGIN),  # a new subscriber
        (False, Phase.READING, Step.BEGIN),  # cut short before its queue existed
        (True, Phase.READING, Step.RESUME),  # killed while reading history
        (True, Phase.LIVE, Step.FINISH),  # killed between history and the live marker
        (True, None, Step.NONE),  # an existing subscriber, or a finished hand-over
    ],
)
def test_the_step_after_a_restart(queue_exists: bool, phase: Phase | None, step: Step) -> None:
    progress = None if phase is None else Progress(phase, StartPoint(None), "m0", "m1")
    assert next_step(queue_exists, progress) is step


# The hand-over, modelled: an archive and a live queue filled as RabbitMQ may fill them.
def _event(number: int, key: str, timestamp: float = NOW) -> DomainEvent:
    return DomainEvent(
        key,
        {"n": number},
        uuid_string=f"00000000-0000-0000-0000-{number:012d}",
        timestamp=timestamp,
    )


Message = tuple[str, dict[str, str], bytes]


def _marker(marker: str) -> Message:
    return ("", marker_headers(marker), b"")


def _message(event: DomainEvent) -> Message:
    return (event.routing_key, {}, event.to_json().encode())


@st.composite
def hand_overs(draw: st.DrawFn) -> tuple[list[Message], list[Message], list[DomainEvent]]:
    """(archive, live queue, the events the subscriber must handle, each once).

    Events before the first marker are in the archive only; those after it are in
    both. Around the hand-over marker the two queues may disagree on the order
    (different queue processes): an event may come after the marker in one and
    before it in the other.
    """
    count = draw(st.integers(0, 30))
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=count, max_size=count))
    events = [_event(number, key) for number, key in enumerate(keys)]
    before_first = draw(st.integers(0, count))
    before_marker = draw(st.integers(before_first, count))
    archive = [_message(event) for event in events[:before_first]]
    archive.append(_marker("m0"))
    archive += [_message(event) for event in events[before_first:before_marker]]
    archive.append(_marker("m1"))
    archive += [_message(event) for event in events[before_marker:]]
    # The live queue is bound with order.*: RabbitMQ routes it nothing else.
    live_events = [
        event for event in events[before_first:] if event.routing_key.startswith("order.")
    ]
    marker_at = draw(st.integers(0, len(live_events)))
    live = [_message(event) for event in live_events]
    live.insert(marker_at, _marker("m1"))
    wanted = [event for event in events if event.routing_key.startswith("order.")]
    return archive, live, wanted


@given(hand_overs())
def test_every_matching_event_is_handled_once_across_the_hand_over(
    case: tuple[list[Message], list[Message], list[DomainEvent]],
) -> None:
    archive, live, wanted = case
    reading = ArchiveReading(Progress(Phase.READING, StartPoint(None), "m0", "m1"), ("order.*",))
    handled: list[str] = []
    for offset, (key, headers, body) in enumerate(archive):
        verdict = reading.archived(offset, key, headers, body)
        if verdict is Verdict.HANDLE:
            handled.append(DomainEvent.from_json(body).uuid_string)
            reading.settled(offset)
    assert reading.complete
    progress = reading.checkpoint()
    assert progress.phase is Phase.LIVE
    hand_over = LiveHandOver("m1", frozenset(progress.overlap))
    for _key, headers, body in live:
        if hand_over.live(headers, body) is Verdict.HANDLE:
            handled.append(DomainEvent.from_json(body).uuid_string)
    assert hand_over.passed
    assert sorted(handled) == sorted(event.uuid_string for event in wanted)


@given(st.lists(st.floats(NOW - 100, NOW + 100), max_size=20), st.floats(NOW - 100, NOW + 100))
def test_history_leaves_out_events_older_than_the_start_point(
    timestamps: list[float], start: float
) -> None:
    reading = ArchiveReading(Progress(Phase.READING, StartPoint(start), "m0", "m1"), ("#",))
    handled = [
        timestamp
        for offset, timestamp in enumerate(timestamps)
        if reading.archived(offset, "a.b", {}, _message(_event(offset, "a.b", timestamp))[2])
        is Verdict.HANDLE
    ]
    assert handled == [timestamp for timestamp in timestamps if timestamp >= start]


@given(st.integers(1, 40), st.data())
def test_a_kill_resumes_where_the_oldest_unsettled_event_is(
    total: int, data: st.DataObject
) -> None:
    """Killed after settling some events (maybe out of order): the restart misses none, and
    handles again only those that were not settled when the progress was saved."""
    archive = [_message(_event(number, "order.placed")) for number in range(total)]
    archive.append(_marker("m1"))
    progress = Progress(Phase.READING, StartPoint(None), "m0", "m1")
    first = ArchiveReading(progress, ("order.*",))
    read = data.draw(st.integers(0, total))
    for offset in range(read):
        first.archived(offset, *archive[offset])
    settled = data.draw(st.sets(st.integers(0, read - 1)) if read else st.just(set()))
    for offset in settled:
        first.settled(offset)
    saved = first.checkpoint()
    assert saved.phase is Phase.READING

    second = ArchiveReading(replace(saved, marker="m2"), ("order.*",))
    archive[-1] = _marker("m2")  # a restart publishes a hand-over marker of its own
    start = saved.resume_at or 0
    handled_again = []
    for offset in range(start, len(archive)):
        if second.archived(offset, *archive[offset]) is Verdict.HANDLE:
            handled_again.append(offset)
    assert second.ended
    assert set(range(total)) <= settled | set(handled_again)  # none missing
    assert set(handled_again) & settled <= set(range(start, read))  # repeats: after the gap only
    assert set(range(start)) <= settled


@pytest.mark.parametrize("step", list(Step))
def test_the_queue_is_declared_only_after_the_first_marker_and_the_progress(step: Step) -> None:
    progress = Progress(
        Phase.READING if step is Step.RESUME else Phase.LIVE, StartPoint(None), "m0", "m1"
    )
    markers = iter(["a", "b"])
    actions = hand_over_actions(
        step,
        None if step in (Step.BEGIN, Step.NONE) else progress,
        StartPoint(None),
        "events-archive",
        "indexer",
        lambda: next(markers),
    )
    kinds = [type(action) for action in actions]
    declared = kinds.index(DeclareTopology)
    if step is Step.BEGIN:
        assert kinds[:declared] == [RequireArchive, PublishMarker, SaveProgress]
        assert actions[1] == PublishMarker("events-archive", "a")
    if step in (Step.BEGIN, Step.RESUME):
        saved, *markers_after, read = actions[declared + 1 :]
        assert isinstance(saved, SaveProgress) and isinstance(read, ReadArchive)
        marker = saved.progress.marker
        assert markers_after == [
            PublishMarker("events-archive", marker),
            PublishMarker("indexer", marker),
        ]
        assert read.progress == saved.progress
    elif step is Step.FINISH:
        assert actions[-1] == ConsumeQueue(LiveHandOver("m1", frozenset()))
    else:
        assert kinds[declared:] == [DeclareTopology, Finish, ConsumeQueue]


def test_an_event_abandoned_at_a_stop_is_read_again_next_time() -> None:
    reading = ArchiveReading(Progress(Phase.READING, StartPoint(None), "m0", "m1"), ("#",))
    for offset in range(3):
        reading.archived(offset, *_message(_event(offset, "a.b")))
    reading.archived(3, *_marker("m1"))
    reading.settled(0)
    reading.settled(2)  # a second worker was faster
    reading.abandoned(1)
    assert reading.in_flight == 0  # nothing left to wait for while stopping...
    assert not reading.complete  # ...but history is not read to its end
    assert reading.checkpoint().resume_at == 1
