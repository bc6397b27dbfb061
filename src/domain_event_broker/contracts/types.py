"""Typed events: an event type's routing key, version and data type, checked at both ends.

>>> from dataclasses import dataclass
>>> @dataclass
... class OrderPlacedData:
...     order_id: str
...     total: float
>>> OrderPlaced = event_type("order.placed", OrderPlacedData, version=2)
>>> event = OrderPlaced(OrderPlacedData("o-1", 9.5), domain_object_id="o-1")
>>> event.event_data["data"]
{'order_id': 'o-1', 'total': 9.5}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from ..events import DomainEvent, encode_event_data, validate_routing_key
from .shapes import ContractViolation, Invalid, Shape

Data = TypeVar("Data")
#: ``fn(body_data) -> body_data``: the data of one version as the next version has it.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class TypedEvent(DomainEvent, Generic[Data]):
    """A domain event whose ``data`` is checked against its type: made by :func:`event_type`."""

    #: Set by :func:`event_type` on each subclass.
    routing_key_of_type: ClassVar[str] = ""
    version: int | None = 1
    shape: ClassVar[Shape]
    upcasters: ClassVar[dict[int, Upcaster]]
    data: Data

    def __init__(
        self,
        data: Data,
        domain_object_id: str | None = None,
        uuid_string: str | None = None,
        timestamp: float | None = None,
        retries: int = 0,
    ) -> None:
        super().__init__(
            self.routing_key_of_type, data, domain_object_id, uuid_string, timestamp, retries
        )
        #: Fields of the received body that the data type does not know (kept, else ignored).
        self.extra_fields: dict[str, Any] = {}

    @property
    def event_data(self) -> dict[str, Any]:
        """The dict that goes on the wire; raises :class:`ContractViolation` for invalid data."""
        try:
            data = self.shape.dump(self.data)
        except Invalid as error:
            raise self.violation(error) from None
        return {**super().event_data, "data": data}

    def to_json(self) -> str:
        return encode_event_data(self.event_data)

    @classmethod
    def violation(cls, error: Invalid) -> ContractViolation:
        return ContractViolation(
            f"{cls.routing_key_of_type} v{cls.version}", error.path, error.problem
        )

    @classmethod
    def upcast(cls, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register ``fn`` that turns the data of ``from_version`` into that of the next version.

        >>> @OrderPlaced.upcast(from_version=1)  # doctest: +SKIP
        ... def v1_to_v2(data):
        ...     return {**data, "currency": "EUR"}
        """
        current = cls.version or 1
        if not isinstance(from_version, int) or not 1 <= from_version < current:
            raise ValueError(
                f"{cls.routing_key_of_type}: from_version must be an older version than "
                f"{current} (1 to {current - 1}), got {from_version!r}"
            )

        def register(fn: Upcaster) -> Upcaster:
            cls.upcasters[from_version] = fn
            return fn

        return register

    @classmethod
    def from_event(cls, event: DomainEvent) -> TypedEvent[Data]:
        """The typed event of a received one; raises :class:`ContractViolation`.

        No version header: the current version (an untyped or 3.x publisher).
        An older version is upcast step by step; a newer one is read as it is
        (a compatible change, such as an added field, still reads).
        """
        current = cls.version or 1
        version = event.version or current
        data = event.data
        while version < current:
            upcaster = cls.upcasters.get(version)
            if upcaster is None:
                raise ContractViolation(
                    f"{cls.routing_key_of_type} v{current}",
                    "header x-domain-event-version",
                    f"version {version} arrived and no upcast from it is registered "
                    f"(@{cls.__name__}.upcast(from_version={version}))",
                )
            try:
                data = upcaster(data)
            except Exception as error:  # an old body the upcast did not foresee
                raise ContractViolation(
                    f"{cls.routing_key_of_type} v{current}",
                    "data",
                    f"the upcast from version {version} failed: {type(error).__name__}: {error}",
                ) from error
            version += 1
        try:
            parsed, unknown = cls.shape.parse(data)
        except Invalid as error:
            raise cls.violation(error) from None
        typed = cls(
            parsed, event.domain_object_id, event.uuid_string, event.timestamp, event.retries
        )
        typed.extra_fields = unknown
        return typed

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this event type's data."""
        return cls.shape.json_schema()


def event_type(
    routing_key: str, data_type: type[Data], *, version: int = 1
) -> type[TypedEvent[Data]]:
    """Declare an event type: its routing key, its data type and the version of that type.

    ``data_type`` is a dataclass, a TypedDict or a Pydantic model. The class
    returned builds events (``OrderPlaced(data, domain_object_id=None)``), is
    a handler's annotation or a binding key, and upcasts older versions.
    """
    validate_routing_key(routing_key)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be a whole number from 1 on, got {version!r}")
    shape = Shape(data_type)
    name = "".join(word.capitalize() for word in routing_key.replace("-", ".").split(".") if word)
    attributes: dict[str, object] = {
        "routing_key_of_type": routing_key,
        "version": version,
        "shape": shape,
        "upcasters": {},
        "__module__": getattr(data_type, "__module__", __name__),
    }
    return type(name, (TypedEvent,), attributes)


def is_event_type(value: object) -> bool:
    """Whether ``value`` is a class :func:`event_type` made."""
    return isinstance(value, type) and issubclass(value, TypedEvent) and value is not TypedEvent
