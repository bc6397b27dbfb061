"""Where a subscriber registered with ``start_from`` begins reading the archive.

No I/O: a start point is resolved once, against the ``now`` it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, Union

#: ``start_from``: an aware datetime (naive means UTC), that long ago, or the archive's first event.
StartFrom = Union[datetime, timedelta, Literal["first"]]  # noqa: UP007 (a runtime alias)

FIRST = "first"
#: Seconds a timestamp offset starts before the start point: arrival times are whole
#: seconds, and a publisher's clock may run a little ahead of the broker's.
CLOCK_MARGIN = 2.0


def as_utc(moment: datetime) -> datetime:
    """A naive datetime means UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class StartPoint:
    """Where reading the archive begins, resolved once (a restart reuses it, not ``now`` again)."""

    #: Unix seconds; events whose own timestamp is earlier are left out. None: from the first.
    not_before: float | None

    @property
    def offset(self) -> str | datetime:
        """``x-stream-offset``: ``first``, or the arrival time a little before the start point."""
        if self.not_before is None:
            return FIRST
        seconds = math.floor(self.not_before - CLOCK_MARGIN)
        return datetime.fromtimestamp(max(seconds, 0), timezone.utc)

    def admits(self, timestamp: float) -> bool:
        return self.not_before is None or timestamp >= self.not_before


def start_point(start_from: StartFrom, now: float) -> StartPoint:
    """Resolve ``start_from`` against ``now`` (Unix seconds)."""
    if isinstance(start_from, str):
        if start_from != FIRST:
            raise ValueError(f"start_from {start_from!r}: 'first', a datetime or a timedelta")
        return StartPoint(None)
    if isinstance(start_from, timedelta):
        if start_from < timedelta(0):
            raise ValueError(f"start_from {start_from!r}: a time ago, not in the future")
        return StartPoint(now - start_from.total_seconds())
    if isinstance(start_from, datetime):
        seconds = as_utc(start_from).timestamp()
        if seconds > now + CLOCK_MARGIN:
            # The archive would be read from a point after the hand-over marker: never ending.
            raise ValueError(f"start_from {start_from.isoformat()} is in the future")
        return StartPoint(seconds)
    raise TypeError(
        f"start_from must be a datetime, a timedelta or 'first', not {type(start_from).__name__}"
    )


def registration_start(
    start_from: StartFrom | None, ordered_by: str | None, now: float
) -> StartPoint | None:
    """Where a registration reads history from (None: live events only).

    An ordered subscriber has partitions and no queue of its own to hand over to:
    the two options together are refused rather than half honoured.
    """
    if start_from is None:
        return None
    if ordered_by is not None:
        raise ValueError(
            "start_from cannot be combined with ordered_by: history hands over to the "
            "subscriber's own queue, and an ordered subscriber has partitions instead"
        )
    return start_point(start_from, now)
