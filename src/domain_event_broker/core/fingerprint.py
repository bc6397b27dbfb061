"""Dead letters grouped by how they failed: a fingerprint of the failure, and the groups.

Thirty events that failed with ``KeyError: 'customer 4711'`` and ``KeyError:
'customer 4712'`` failed the same way: the fingerprint is the exception type
and its message with ids and numbers stripped. Dead letters that releases 3.x
stored carry no failure of ours, only RabbitMQ's ``x-death``: they form a group
of their own. Nothing here does I/O; the console reads the letters and shows
the groups.

>>> failure_of({EXCEPTION_TYPE_HEADER: "KeyError", EXCEPTION_MESSAGE_HEADER: "'customer 4711'"})
Failure(exception_type='KeyError', pattern="'customer <n>'")
>>> fingerprint(failure_of({EXCEPTION_TYPE_HEADER: "KeyError",
...                         EXCEPTION_MESSAGE_HEADER: "'customer 4712'"}))
'ecfc02d582a5'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .topology import EXCEPTION_MESSAGE_HEADER, EXCEPTION_TYPE_HEADER, FAILED_AT_HEADER

#: The group of dead letters stored by releases 3.x (RabbitMQ's ``x-death`` only).
LEGACY_FAILURE = "dead-lettered by release 3.x (no failure recorded)"
#: The group of letters with no failure recorded at all (moved there by hand, say).
UNKNOWN_FAILURE = "no failure recorded"

# Ids first (a UUID holds digits that the number rule would split), then numbers.
_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?<![\w.])(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}(?![\w.])"
)
_NUMBERS = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Failure:
    """How a dead letter failed, with what varies from event to event stripped."""

    exception_type: str
    pattern: str


def pattern_of(message: str) -> str:
    """``message`` with ids (UUIDs, long hex) as ``<id>`` and numbers as ``<n>``."""
    stripped = _IDS.sub("<id>", message)
    stripped = _NUMBERS.sub("<n>", stripped)
    return _SPACES.sub(" ", stripped).strip()


def failure_of(headers: Mapping[str, Any] | None) -> Failure:
    """The failure a dead letter's headers record (our headers, else 3.x's ``x-death``)."""
    headers = headers if isinstance(headers, Mapping) else {}
    kind = _text(headers.get(EXCEPTION_TYPE_HEADER))
    if kind:
        return Failure(kind, pattern_of(_text(headers.get(EXCEPTION_MESSAGE_HEADER))))
    if "x-death" in headers:
        return Failure("", LEGACY_FAILURE)
    return Failure("", UNKNOWN_FAILURE)


def fingerprint(failure: Failure) -> str:
    """A short stable name of ``failure``, safe in a URL."""
    key = f"{failure.exception_type}\0{failure.pattern}".encode("utf-8", "replace")
    return hashlib.sha256(key).hexdigest()[:12]


def failed_at(headers: Mapping[str, Any] | None) -> str | None:
    """When the letter failed (ISO 8601, UTC), when it says."""
    if not isinstance(headers, Mapping):
        return None
    return _text(headers.get(FAILED_AT_HEADER)) or None


@dataclass
class FailureGroup:
    """The dead letters of one subscriber that failed the same way."""

    fingerprint: str
    failure: Failure
    count: int = 0
    first_seen: str | None = None
    last_seen: str | None = None
    #: Positions (in the queue, from its head) of the letters in this group.
    positions: list[int] = field(default_factory=list)

    def add(self, position: int, seen: str | None) -> None:
        self.count += 1
        self.positions.append(position)
        if seen is not None:
            if self.first_seen is None or seen < self.first_seen:
                self.first_seen = seen
            if self.last_seen is None or seen > self.last_seen:
                self.last_seen = seen


def group_failures(letters: Iterable[Mapping[str, Any] | None]) -> list[FailureGroup]:
    """The groups of the letters whose headers are ``letters`` (in queue order).

    Largest group first; groups of equal size in the order they first appear.
    """
    groups: dict[str, FailureGroup] = {}
    for position, headers in enumerate(letters):
        failure = failure_of(headers)
        name = fingerprint(failure)
        group = groups.get(name)
        if group is None:
            group = groups[name] = FailureGroup(name, failure)
        group.add(position, failed_at(headers))
    return sorted(groups.values(), key=lambda group: -group.count)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
