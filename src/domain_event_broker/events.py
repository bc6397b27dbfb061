"""Domain events, their JSON wire format, and routing/binding-key rules.

The body of every message is the JSON object ``{"routing_key", "data",
"domain_object_id", "uuid_string", "timestamp"}`` (``timestamp``: float
seconds since the Unix epoch, UTC), as in releases 2.x-3.x.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .errors import EventNotSerializable, InvalidEvent, InvalidRoutingKey

MAX_KEY_BYTES = 255
_WILDCARDS = ("*", "#")


class DomainEvent:
    """One domain event: what happened (``routing_key``) and its ``data``.

    >>> event = DomainEvent("user.registered", {"user_id": 7})
    >>> DomainEvent.from_json(event.to_json()) == event
    True
    """

    #: The contract version of a typed event: from the ``x-domain-event-version``
    #: header of a delivery, None when it had none (an untyped event, a 3.x publisher).
    version: int | None = None

    def __init__(
        self,
        routing_key: str = "",
        data: Any = None,
        domain_object_id: str | None = None,
        uuid_string: str | None = None,
        timestamp: float | None = None,
        retries: int = 0,
        **kwargs: Any,
    ) -> None:
        # **kwargs: bodies written by newer releases may carry fields we do not know yet.
        self.routing_key = routing_key
        self.data = {} if data is None else data
        self.domain_object_id = domain_object_id
        self.uuid_string = str(uuid.uuid4()) if uuid_string is None else uuid_string
        self.timestamp = time.time() if timestamp is None else timestamp
        #: How many times this event was delivered to this subscriber before.
        self.retries = retries

    @property
    def event_data(self) -> dict[str, Any]:
        """The dict that goes on the wire."""
        return {
            "routing_key": self.routing_key,
            "data": self.data,
            "domain_object_id": self.domain_object_id,
            "uuid_string": self.uuid_string,
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        """Serialise the event; raises :class:`EventNotSerializable` naming the bad key."""
        return encode_event_data(self.event_data)

    @classmethod
    def from_json(cls, json_data: str | bytes | bytearray | memoryview) -> DomainEvent:
        """Create a DomainEvent from a message body.

        Raises :class:`InvalidEvent` when the body is not a JSON object.
        """
        if isinstance(json_data, (bytes, bytearray, memoryview)):
            try:
                json_data = bytes(json_data).decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidEvent(f"message body is not UTF-8 text: {error}") from None
        try:
            fields = json.loads(json_data)
        except RecursionError:
            # A body of deeply nested brackets: not an event, and no reason to crash.
            raise InvalidEvent(
                f"message body is nested too deeply to be an event: {_excerpt(json_data)}"
            ) from None
        except ValueError as error:
            raise InvalidEvent(
                f"message body is not JSON ({error}): {_excerpt(json_data)}"
            ) from None
        if not isinstance(fields, dict):
            raise InvalidEvent(
                f"message body is JSON but not an object with event fields: {_excerpt(json_data)}"
            )
        fields.pop("retries", None)
        try:
            return cls(**fields)
        except TypeError as error:
            raise InvalidEvent(f"message body has unexpected fields: {error}") from None

    def __repr__(self) -> str:
        return (
            f"DomainEvent({self.routing_key!r}, {self.data!r}, "
            f"domain_object_id={self.domain_object_id!r}, uuid_string={self.uuid_string!r})"
        )

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DomainEvent):
            return NotImplemented
        return self.event_data == other.event_data

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


def encode_event_data(event_data: Mapping[str, Any]) -> str:
    """JSON-encode an event's fields, naming the offending key when that fails.

    The bytes are those 3.x writes (``json.dumps`` with its default separators,
    ``", "`` and ``": "``), so that filters on a body's bytes keep matching.
    Unlike 3.x, NaN and infinities are refused: they are not JSON, and a
    consumer in another language (or a strict parser) could not read the event.

    >>> encode_event_data({"routing_key": "user.registered", "data": {"region": "eu"}})
    '{"routing_key": "user.registered", "data": {"region": "eu"}}'
    """
    try:
        return json.dumps(event_data, allow_nan=False)
    except (TypeError, ValueError) as error:
        path = _find_unserializable(event_data.get("data"), "data")
        where = path or "the event"
        raise EventNotSerializable(
            f"event data cannot be sent as JSON: {where} is {error}. "
            "Convert it to a str, number, bool, None, list or dict first "
            "(for example a datetime with .isoformat())."
        ) from None


def _find_unserializable(value: Any, path: str) -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return f"{path} key {key!r}"
            found = _find_unserializable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unserializable(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return path
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return path


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def is_routing_key(routing_key: object) -> bool:
    """Whether ``routing_key`` passes :func:`validate_routing_key`."""
    try:
        validate_routing_key(routing_key)
    except InvalidRoutingKey:
        return False
    return True


def validate_routing_key(routing_key: object) -> str:
    """Check that ``routing_key`` names one event type, e.g. ``user.registered``.

    Raises :class:`InvalidRoutingKey` for an empty key, empty words, wildcards
    or more than 255 bytes.
    """
    if type(routing_key) is str and routing_key in _VALID_ROUTING_KEYS:
        return routing_key  # every publish checks its key: an app has a few dozen of them
    key = _check_key_text(routing_key, "routing key")
    for word in key.split("."):
        if not word:
            raise InvalidRoutingKey(
                f"routing key {key!r} has an empty word; use dot-separated words "
                "like 'user.registered'"
            )
        if any(wildcard in word for wildcard in _WILDCARDS):
            raise InvalidRoutingKey(
                f"routing key {key!r} contains a wildcard ('*' or '#'); wildcards belong in "
                "a subscriber's binding keys, an event's routing key names one event type"
            )
    if type(key) is str:
        if len(_VALID_ROUTING_KEYS) >= _MAX_REMEMBERED_KEYS:
            _VALID_ROUTING_KEYS.clear()  # keys made up per event: stay bounded
        _VALID_ROUTING_KEYS.add(key)
    return key


#: Routing keys found valid already (a key's validity never changes).
_VALID_ROUTING_KEYS: set[str] = set()
_MAX_REMEMBERED_KEYS = 1024


def validate_binding_key(binding_key: object) -> str:
    """Check that ``binding_key`` is a topic pattern: words, ``*`` or ``#``."""
    key = _check_key_text(binding_key, "binding key")
    for word in key.split("."):
        if not word:
            raise InvalidRoutingKey(
                f"binding key {key!r} has an empty word; use patterns like 'user.*' or 'user.#'"
            )
        if word not in _WILDCARDS and any(wildcard in word for wildcard in _WILDCARDS):
            raise InvalidRoutingKey(
                f"binding key {key!r}: a wildcard must be a whole word ('user.*', not 'user*')"
            )
    return key


def _check_key_text(key: object, what: str) -> str:
    if not isinstance(key, str):
        raise InvalidRoutingKey(f"{what} must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidRoutingKey(f"{what} must not be empty; use e.g. 'user.registered'")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidRoutingKey(
            f"{what} {key[:40]!r}... is {len(key.encode('utf-8'))} bytes; "
            f"RabbitMQ allows at most {MAX_KEY_BYTES}"
        )
    return key


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether a topic exchange routes ``routing_key`` to a ``binding_key`` binding.

    ``*`` matches exactly one word, ``#`` zero or more.

    >>> topic_matches("user.*", "user.registered"), topic_matches("user.#", "user")
    (True, True)
    """
    return _match(binding_key.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _match(rest, words[1:])
    return False
