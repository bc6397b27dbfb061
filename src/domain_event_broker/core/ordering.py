"""Ordered handling per domain object: the pure decisions.

A subscriber registered with ``ordered_by="domain_object_id"`` consumes its
partition queues (see :mod:`.partitions`). RabbitMQ's consistent-hash exchange
sends every event of one object to one partition, and a single active consumer
per partition keeps them in publish order up to the process that holds it.
Inside that process the :class:`ObjectLine` keeps the order: an event starts only
once the earlier events of its object are settled (handled, dead-lettered,
dropped or sent back). A ``Retry`` is held in the process, its delivery unacked,
so the later events of its object wait behind it in the line (no wait queue,
which would let them overtake it); if the process dies meanwhile, RabbitMQ
gives the unacked event back to its partition ahead of the later ones.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

from .partitions import ORDERED_BY
from .topology import OBJECT_ID_HEADER

_KEY_IN_BODY = b'"domain_object_id"'
_NO_ID_IN_BODY = b'"domain_object_id": null'

Item = TypeVar("Item")


def object_id_text(domain_object_id: object) -> str | None:
    """The header's form of an object id: ``str`` (``42`` and ``"42"`` are one object)."""
    return None if domain_object_id is None else str(domain_object_id)


def object_id_of(body: bytes) -> str | None:
    """The ``domain_object_id`` of an event body, as text; None when it has none
    (or the body is not an event: it then goes to the one partition of events
    without an id, and is never lost)."""
    keys = body.count(_KEY_IN_BODY)
    if keys == 0:
        return None  # not an event of ours: no parse
    if keys == 1 and _NO_ID_IN_BODY in body:
        # As 3.x writes an event without an id: the one key there is null (or, nested in
        # the data, the event itself has none). Most events of most publishers: no parse.
        return None
    try:
        event = json.loads(body)
    except ValueError:
        return None
    return object_id_text(event.get(ORDERED_BY)) if isinstance(event, dict) else None


def with_object_id(headers: dict[str, Any] | None, body: bytes) -> dict[str, Any] | None:
    """``headers`` plus the object id header of ``body`` (when the event has an id):
    what every publish path sends, so that the consistent-hash exchange can read it."""
    if headers and OBJECT_ID_HEADER in headers:
        return headers  # set from the event itself: no need to read the body
    object_id = object_id_of(body)
    if object_id is None:
        return headers
    return {**(headers or {}), OBJECT_ID_HEADER: object_id}


def object_key(headers: Mapping[str, Any] | None, body: bytes) -> str | None:
    """The object a delivery belongs to: its header, else (a 3.x publisher) its body."""
    value = headers.get(OBJECT_ID_HEADER) if headers else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return object_id_of(body)


class ObjectLine(Generic[Item]):
    """The per-object order of one process's in-flight events.

    ``arrive`` an event: it starts now (returned) or waits behind the earlier
    event of its object. ``done`` with an event: the next one of its object
    starts (returned). Events without an object start at once.

    >>> line: ObjectLine[str] = ObjectLine()
    >>> line.arrive("order-1", "placed"), line.arrive("order-1", "paid")
    ('placed', None)
    >>> line.done("order-1"), line.done("order-1")
    ('paid', None)
    """

    def __init__(self) -> None:
        #: Objects with an event started and not done, and the events waiting behind it.
        self._waiting: dict[Hashable, deque[Item]] = {}

    def arrive(self, key: Hashable | None, item: Item) -> Item | None:
        if key is None:
            return item
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque()
            return item
        waiting.append(item)
        return None

    def done(self, key: Hashable | None) -> Item | None:
        """The started event of ``key`` is settled: the next one to start, if any."""
        if key is None or key not in self._waiting:
            return None
        waiting = self._waiting[key]
        if waiting:
            return waiting.popleft()
        del self._waiting[key]
        return None

    def withdraw(self, key: Hashable | None) -> list[Item]:
        """The started event of ``key`` goes back to its queue: so do those waiting
        behind it (in order), none of them started here."""
        if key is None:
            return []
        return list(self._waiting.pop(key, ()))

    def clear(self) -> list[Item]:
        """Every waiting event (a lost channel or stopping): none was started."""
        waiting = [item for line in self._waiting.values() for item in line]
        self._waiting.clear()
        return waiting

    @property
    def objects(self) -> int:
        """Objects with an event in flight."""
        return len(self._waiting)

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._waiting.values())
