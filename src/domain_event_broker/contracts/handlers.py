"""Typed handlers: a handler that takes an event type gets the parsed, checked event.

Every subscriber (sync, asyncio, in-memory) registers through
:func:`typed_registration`: event types among the binding keys stand for their
routing keys, and a handler annotated with an event type (or registered for
one) is wrapped so that it receives that type. A body that does not match
raises :class:`ContractViolation` inside the handler call: an ordinary handler
failure, dead-lettered (or dropped) by the usual rule, with the field named.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Union

from ..events import DomainEvent
from .types import TypedEvent, is_event_type


class TypedHandler:
    """Calls ``handler`` with the typed event of each delivery whose routing key has a type.

    Events of other routing keys (a wildcard binding) reach it as they are. It
    returns what the handler returns, so an ``async def`` handler is awaited.
    """

    def __init__(
        self, handler: Callable[[Any], object], event_types: Sequence[type[TypedEvent[Any]]]
    ) -> None:
        self.handler = handler
        self.event_types = tuple(event_types)
        self._by_key = {kind.routing_key_of_type: kind for kind in self.event_types}
        self.__name__ = getattr(handler, "__name__", type(handler).__name__)
        self.__qualname__ = getattr(handler, "__qualname__", self.__name__)

    def __call__(self, event: DomainEvent) -> object:
        kind = self._by_key.get(event.routing_key)
        return self.handler(event if kind is None else kind.from_event(event))

    def __repr__(self) -> str:
        return f"TypedHandler({self.handler!r}, {[t.__name__ for t in self.event_types]})"


def annotated_event_types(handler: object) -> list[type[TypedEvent[Any]]]:
    """The event types the first parameter of ``handler`` is annotated with (none: untyped)."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())  # type: ignore[arg-type]
        target = handler if inspect.isfunction(handler) or inspect.ismethod(handler) else None
        target = target or getattr(handler, "__call__", None)  # noqa: B004
        hints = typing.get_type_hints(target)
    except Exception:  # no signature, or hints that do not resolve: an untyped handler
        return []
    if not parameters or parameters[0].name not in hints:
        return []
    hint = hints[parameters[0].name]
    options = (
        typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    )
    return [option for option in options if is_event_type(option)]


def typed_registration(
    handler: Any, binding_keys: str | Sequence[Any]
) -> tuple[Any, str | tuple[str, ...]]:
    """(the handler to call, binding keys as text) for a registration.

    Untyped handlers and keys come back as they were given (3.x behaviour).
    Keys left empty take the routing keys of the annotated event types.
    """
    given: tuple[Any, ...] = (
        (binding_keys,) if isinstance(binding_keys, (str, type)) else tuple(binding_keys)
    )
    listed = [key for key in given if is_event_type(key)]
    annotated = annotated_event_types(handler)
    if not listed and not annotated:
        return handler, binding_keys  # type: ignore[return-value]
    keys = tuple(key.routing_key_of_type if is_event_type(key) else key for key in given)
    if not keys:
        keys = tuple(kind.routing_key_of_type for kind in annotated)
    event_types = list(dict.fromkeys([*annotated, *listed]))
    return TypedHandler(handler, event_types), keys


def event_types_of(handler: object) -> tuple[type[TypedEvent[Any]], ...]:
    """The event types a registered handler receives (none for an untyped one)."""
    return handler.event_types if isinstance(handler, TypedHandler) else ()
