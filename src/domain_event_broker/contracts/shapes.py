"""What an event's data looks like: checked against JSON, turned into objects, as JSON Schema.

A :class:`Shape` stands for one data type: a dataclass, a TypedDict or a
Pydantic model. For dataclasses and TypedDicts "valid" means: every required
field present, each JSON value of the type its annotation names (``str``,
``int``, ``float``, ``bool``, ``None``, ``list[...]``, ``dict[str, ...]``,
nested dataclasses and TypedDicts, ``Optional``, unions, ``Literal``, ``Any``).
Unknown fields are kept (a TypedDict keeps them in its dict, a dataclass event
in ``extra_fields``) and otherwise ignored: a newer publisher may add fields.
Pydantic models validate as Pydantic says (an optional extra, imported only
when a model is given).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_NONE_TYPE = type(None)
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class ContractViolation(ValueError):
    """Event data that does not match its contract; says which field and what was wrong.

    ``field`` is a path such as ``data.lines[2].price``; ``problem`` what was wrong there.
    """

    __module__ = "domain_event_broker.contracts"  # where users import it (logs name it so)

    def __init__(self, event: str, field: str, problem: str) -> None:
        super().__init__(f"{event}: field {field}: {problem}")
        self.event = event
        self.field = field
        self.problem = problem


class Invalid(Exception):
    """Raised inside a shape's check; the event type turns it into a ContractViolation."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


def _got(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:60] + '...'}"


def is_typed_dict(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, dict) and hasattr(kind, "__total__")


def is_pydantic_model(kind: object) -> bool:
    return (
        isinstance(kind, type)
        and hasattr(kind, "model_validate")
        and hasattr(kind, "model_json_schema")
    )


@functools.cache  # per data type, not per event: resolving annotations is slow
def _required_keys(kind: type) -> tuple[set[str], dict[str, Any]]:
    hints = get_type_hints(kind)
    if dataclasses.is_dataclass(kind):
        required = {
            f.name
            for f in dataclasses.fields(kind)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        }
        return required, {f.name: hints[f.name] for f in dataclasses.fields(kind) if f.init}
    return set(getattr(kind, "__required_keys__", hints)), hints


def decode(value: object, annotation: Any, path: str) -> Any:
    """``value`` (parsed JSON) as ``annotation`` says; raises :class:`Invalid` naming ``path``."""
    if annotation is Any or annotation is object:
        return value
    if annotation is None or annotation is _NONE_TYPE:
        if value is None:
            return None
        raise Invalid(path, f"expected null, got {_got(value)}")
    if annotation in _JSON_NAMES:
        return _scalar(value, annotation, path)
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return _union(value, get_args(annotation), path)
    if origin is Literal:
        choices = get_args(annotation)
        if any(value == choice and type(value) is type(choice) for choice in choices):
            return value
        raise Invalid(path, f"expected one of {list(choices)!r}, got {_got(value)}")
    if origin in (list, typing.List, tuple) or annotation is list:  # noqa: UP006
        if not isinstance(value, list):
            raise Invalid(path, f"expected a list, got {_got(value)}")
        args = get_args(annotation)
        item = args[0] if args else Any
        return [decode(element, item, f"{path}[{index}]") for index, element in enumerate(value)]
    if origin in (dict, typing.Dict) or annotation is dict:  # noqa: UP006
        if not isinstance(value, dict):
            raise Invalid(path, f"expected an object, got {_got(value)}")
        args = get_args(annotation)
        item = args[1] if len(args) == 2 else Any
        return {key: decode(element, item, f"{path}.{key}") for key, element in value.items()}
    if isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or is_typed_dict(annotation)
    ):
        return decode_record(value, annotation, path)[0]
    raise Invalid(path, f"cannot check values of type {annotation!r}")


def _scalar(value: object, kind: type, path: str) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON has one number type; 3 is a valid float
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise Invalid(path, f"expected {_JSON_NAMES[kind]}, got {_got(value)}")


def _union(value: object, options: tuple[Any, ...], path: str) -> object:
    problems: list[Invalid] = []
    for option in options:
        try:
            return decode(value, option, path)
        except Invalid as error:
            if option is not _NONE_TYPE:  # "expected null" says nothing of an Optional
                problems.append(error)
    if len(problems) == 1:
        raise problems[0]
    raise Invalid(path, "matches none of its types: " + "; ".join(p.problem for p in problems))


def decode_record(value: object, kind: type, path: str) -> tuple[Any, dict[str, Any]]:
    """A dataclass or TypedDict from a JSON object, and the fields it does not know."""
    if not isinstance(value, dict):
        raise Invalid(path, f"expected an object, got {_got(value)}")
    required, hints = _required_keys(kind)
    if not value.keys() >= required:
        raise Invalid(f"{path}.{min(required - value.keys())}", "is required but missing")
    fields = {}
    for name, hint in hints.items():
        if name in value:
            item = value[name]
            # The hot path: a str, int, float or bool of exactly its annotated type (a bool
            # is no int here), or a bare list or dict, needs no further look.
            fields[name] = item if type(item) is hint else decode(item, hint, f"{path}.{name}")
    unknown = (
        {key: item for key, item in value.items() if key not in hints}
        if len(value) > len(fields)
        else {}
    )
    if dataclasses.is_dataclass(kind):
        return kind(**fields), unknown
    return {**unknown, **fields}, unknown


def encode(value: object) -> Any:
    """Plain JSON values of ``value`` (dataclasses become dicts, recursively)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of values that :func:`decode` accepts as ``annotation``."""
    if annotation is Any or annotation is object:
        return {}
    if annotation is None or annotation is _NONE_TYPE:
        return {"type": "null"}
    scalar = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation)
    if scalar:
        return {"type": scalar}
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [schema(option) for option in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple) or annotation is list:
        return {"type": "array", "items": schema(args[0] if args else Any)}
    if origin is dict or annotation is dict:
        return {"type": "object", "additionalProperties": schema(args[1] if args else Any)}
    if isinstance(annotation, type) and is_pydantic_model(annotation):
        model_schema: dict[str, Any] = annotation.model_json_schema()  # type: ignore[attr-defined]
        definitions = model_schema.pop("$defs", {})
        inlined: dict[str, Any] = _inline(model_schema, definitions, 0)
        return inlined
    required, hints = _required_keys(annotation)
    return {
        "type": "object",
        "title": annotation.__name__,
        "properties": {name: schema(hint) for name, hint in hints.items()},
        "required": sorted(required),
    }


def _inline(value: Any, definitions: Mapping[str, Any], depth: int) -> Any:
    """``value`` with Pydantic's local ``$ref``s replaced by their definitions: a message's
    schema stands alone inside an AsyncAPI document (a recursive model stops at depth 8)."""
    if isinstance(value, list):
        return [_inline(item, definitions, depth) for item in value]
    if not isinstance(value, dict):
        return value
    reference = value.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/") and depth < 8:
        return _inline(definitions.get(reference[len("#/$defs/") :], {}), definitions, depth + 1)
    if reference is not None:
        return {}  # deeper than that: any value
    return {key: _inline(item, definitions, depth) for key, item in value.items()}


class Shape:
    """How one data type is checked, built from JSON, written as JSON and described."""

    def __init__(self, kind: type) -> None:
        if not (dataclasses.is_dataclass(kind) or is_typed_dict(kind) or is_pydantic_model(kind)):
            raise TypeError(
                f"event data must be a dataclass, a TypedDict or a Pydantic model, not {kind!r}"
            )
        self.kind = kind
        self.pydantic = is_pydantic_model(kind)
        _required_keys(kind) if not self.pydantic else None  # unresolvable hints fail here

    def parse(self, value: object) -> tuple[Any, dict[str, Any]]:
        """(data object, unknown fields) from JSON; raises :class:`Invalid`."""
        if self.pydantic:
            return _pydantic_parse(self.kind, value), {}
        return decode_record(value, self.kind, "data")

    def dump(self, data: object) -> Any:
        """The JSON value of ``data`` after checking it; raises :class:`Invalid`."""
        if self.pydantic:
            if not isinstance(data, self.kind):
                data = _pydantic_parse(self.kind, data)
            return data.model_dump(mode="json")  # type: ignore[attr-defined]
        plain = encode(data)
        decode_record(plain, self.kind, "data")
        return plain

    def json_schema(self) -> dict[str, Any]:
        return schema(self.kind)


def _pydantic_parse(kind: type, value: object) -> Any:
    validate: Callable[[object], Any] = kind.model_validate  # type: ignore[attr-defined]
    try:
        return validate(value)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        errors: Any = getattr(error, "errors", None)
        first: Mapping[str, Any] = errors()[0] if callable(errors) and errors() else {}
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first.get("loc", ())
        )
        raise Invalid(f"data{where}", str(first.get("msg", error))) from None
