"""The archive's names and arguments, retention and sizes as operators write them, markers.

No I/O. The archive of an exchange ``E`` is the stream ``E-archive`` bound to
``E`` with ``#``; a subscriber ``N`` reading history keeps its progress in
``N-history`` and holds the lock ``N-history-lock`` (see :mod:`.history`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from ..events import DomainEvent, topic_matches
from .start_point import CLOCK_MARGIN

#: AMQP's reply to another connection's exclusive queue (a history lock, a `listen` queue).
RESOURCE_LOCKED = 405
#: A marker's header: its id. A marker carries no event; every reader skips it.
MARKER_HEADER = "x-domain-events-marker"


def archive_name(exchange: str) -> str:
    """The archive stream of ``exchange``."""
    return f"{exchange}-archive"


def progress_queue_name(subscriber: str) -> str:
    """Where subscriber ``subscriber`` keeps its progress through history."""
    return f"{subscriber}-history"


def lock_queue_name(subscriber: str) -> str:
    """The exclusive queue whose holder reads ``subscriber``'s history."""
    return f"{subscriber}-history-lock"


def archive_arguments(max_age: str, max_bytes: int | None) -> dict[str, Any]:
    """The stream's queue arguments: retention by age (``7D``, ``12h``) and, if given, by size."""
    arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": parse_max_age(max_age)}
    if max_bytes is not None:
        arguments["x-max-length-bytes"] = max_bytes
    return arguments


def archive_retention(arguments: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(max age, max bytes) of a stream from its declared arguments (None: no limit)."""
    max_age, max_bytes = arguments.get("x-max-age"), arguments.get("x-max-length-bytes")
    return (None if max_age is None else str(max_age)), (
        None if max_bytes is None else int(max_bytes)
    )


#: The state of the progress queue: it keeps only the last progress saved.
PROGRESS_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-length": 1}

_AGE_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
_BYTE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}


def parse_max_age(text: str) -> str:
    """``30D``, ``12h``, ``90m`` as RabbitMQ's ``x-max-age`` takes them (Y M D h m s)."""
    text = text.strip()
    if len(text) < 2 or not text[:-1].isdigit() or text[-1] not in _AGE_UNITS:
        raise ValueError(f"max age {text!r}: a whole number and one of Y M D h m s, e.g. 7D")
    if int(text[:-1]) < 1:
        raise ValueError(f"max age {text!r}: at least 1")
    return text


def age_seconds(max_age: str) -> int:
    """Seconds in a max age such as ``7D``."""
    return int(max_age[:-1]) * _AGE_UNITS[max_age[-1]]


def parse_bytes(text: str) -> int:
    """``20GB``, ``500MB``, ``1024`` as a byte count."""
    cleaned = text.strip().upper()
    for unit, factor in _BYTE_UNITS.items():
        if cleaned.endswith(unit) and cleaned[: -len(unit)].strip().isdigit():
            return int(cleaned[: -len(unit)]) * factor
    if cleaned.isdigit():
        return int(cleaned)
    raise ValueError(f"size {text!r}: a number of bytes, or with KB MB GB TB, e.g. 20GB")


def parse_duration(text: str) -> timedelta:
    """``2h``, ``30m``, ``7D``: how long ago (``--since``); the units of :func:`parse_max_age`."""
    return timedelta(seconds=age_seconds(parse_max_age(text)))


def marker_in(headers: object) -> str | None:
    """The marker id a message carries, or None for an event."""
    # A dict first: the check against the Mapping ABC costs more than the rest, per message.
    if type(headers) is not dict and not isinstance(headers, Mapping):
        return None
    value = headers.get(MARKER_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def stream_offset_in(headers: object) -> int:
    """The offset RabbitMQ gives a message read from a stream (``x-stream-offset``), or -1."""
    if type(headers) is not dict and not isinstance(headers, Mapping):  # a dict first: cheaper
        return -1
    value = headers.get("x-stream-offset")
    return value if isinstance(value, int) else -1


def marker_headers(marker: str) -> dict[str, Any]:
    """The headers of a marker message (its body is empty)."""
    return {MARKER_HEADER: marker}


def matches(binding_keys: Iterable[str], routing_key: str) -> bool:
    """Whether a topic exchange would route ``routing_key`` to one of ``binding_keys``."""
    return any(topic_matches(key, routing_key) for key in binding_keys)


#: Routing keys whose answer a :class:`BindingMatcher` keeps (it starts over beyond).
MATCHER_MEMORY = 10_000


class BindingMatcher:
    """:func:`matches` for one set of binding keys, for every message of an archive read.

    An archive holds few distinct routing keys and many events of each: the
    answer for a routing key is worked out once and kept (``#`` matches all).

    >>> match = BindingMatcher(("order.*",))
    >>> match("order.placed"), match("order.placed.eu"), match("user.registered")
    (True, False, False)
    """

    def __init__(self, binding_keys: Iterable[str]) -> None:
        self.binding_keys = tuple(binding_keys)
        self.everything = "#" in self.binding_keys
        self._known: dict[str, bool] = {}

    def __call__(self, routing_key: str) -> bool:
        if self.everything:
            return True
        known = self._known.get(routing_key)
        if known is None:
            if len(self._known) >= MATCHER_MEMORY:
                self._known.clear()
            known = self._known[routing_key] = matches(self.binding_keys, routing_key)
        return known


#: The last key of an event as 3.x (and we) write it: ``json.dumps``' separators, this order.
_LAST_KEY = b', "timestamp": '
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def timestamp_of(body: bytes) -> float | None:
    """An event's own timestamp, read without parsing the body when it ends as 3.x writes it.

    ``..., "timestamp": 1700000000.5}``: an unescaped quote after ``", "`` starts
    a key, and a number closed by the body's last brace is the outer object's.
    None: the body ends otherwise (its timestamp null, another key order, not an
    event); the caller parses it.

    >>> timestamp_of(b'{"routing_key": "a.b", "data": {"timestamp": 1}, "timestamp": 2.5}')
    2.5
    """
    at = body.rfind(_LAST_KEY)
    if at < 0 or body[-1:] != b"}":
        return None
    number = body[at + len(_LAST_KEY) : -1]
    if _JSON_NUMBER.fullmatch(number) is None:
        return None
    return float(number)


def past_window(timestamp: float, until: float) -> bool:
    """Whether a read of the archive in time order may stop at an event stamped ``timestamp``.

    The archive is in arrival order, and no arrival time reaches an AMQP reader:
    an event's own timestamp stands in for it. One more than ``CLOCK_MARGIN``
    seconds after ``until`` (arrival times are whole seconds, and publishers'
    clocks differ a little) says the window is behind. An event stamped before
    ``until`` that arrives after it (an outbox relay catching up after an
    outage) is not in the window's part of the archive: a later ``until`` finds it.
    """
    return timestamp > until + CLOCK_MARGIN


def in_window(event: DomainEvent, since: float | None, until: float | None) -> bool:
    """Whether ``event``'s own timestamp lies in [since, until)."""
    return (since is None or event.timestamp >= since) and (
        until is None or event.timestamp < until
    )
