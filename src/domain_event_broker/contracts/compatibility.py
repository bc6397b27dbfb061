"""Whether consumers built against one AsyncAPI document can read what another says is sent.

``OLD`` is the document the consumers were built against, ``NEW`` the one the
producers send now. :func:`changes` lists every difference of the events' data
schemas, each a break (a consumer may fail on what is sent now) or safe:

- breaks: an event type removed; a required field removed, made optional or
  retyped; a value type widened (``str`` to ``str | None``); an enum narrowed
  (values consumers wait for are no longer sent) or widened (consumers built
  against OLD refuse the new values);
- safe: a field added (consumers keep and ignore unknown fields), an optional
  field removed or now always sent, a type narrowed (``str | None`` to ``str``,
  a number to an integer), an event type added, a version bumped.

Pure: two documents in, a list out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ANY = "any"


@dataclass(frozen=True)
class Change:
    event: str
    path: str
    what: str
    breaks: bool

    def __str__(self) -> str:
        verdict = "BREAKS" if self.breaks else "safe  "
        where = f" {self.path}" if self.path else ""
        return f"{verdict} {self.event}{where}: {self.what}"


def events_of(document: Mapping[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    """``{routing key: (version, data schema)}`` of a document's typed events."""
    if not isinstance(document, Mapping) or not str(document.get("asyncapi", "")).startswith("3."):
        raise ValueError("not an AsyncAPI 3 document (no 'asyncapi: 3.x' at its top)")
    messages = document.get("components", {}).get("messages", {})
    events = {}
    for message in messages.values():
        if "x-domain-event-version" not in message:
            continue  # the untyped message: no contract to keep
        data = message.get("payload", {}).get("properties", {}).get("data", {})
        events[str(message.get("name"))] = (int(message["x-domain-event-version"]), data)
    return events


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every change from ``old`` to ``new``, each with whether it breaks a consumer."""
    before, after = events_of(old), events_of(new)
    found: list[Change] = []
    for event in sorted(before.keys() | after.keys()):
        if event not in after:
            found.append(Change(event, "", "event type removed: producers no longer send it", True))
        elif event not in before:
            found.append(Change(event, "", "event type added", False))
        else:
            (old_version, old_schema), (new_version, new_schema) = before[event], after[event]
            if old_version != new_version:
                found.append(Change(event, "", f"version {old_version} -> {new_version}", False))
            found.extend(_compare(event, "data", old_schema, new_schema))
    return found


def _types(schema: Mapping[str, Any]) -> set[str]:
    if "anyOf" in schema or "oneOf" in schema:
        return set().union(*(_types(option) for option in schema.get("anyOf", schema.get("oneOf"))))
    if "enum" in schema:
        return {"enum"}
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "properties" in schema else {ANY}
    return set(kind) if isinstance(kind, list) else {kind}


def _member(schema: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The part of ``schema`` (or of one of its options) that has ``key``."""
    if key in schema:
        return schema
    for option in schema.get("anyOf", schema.get("oneOf", [])):
        if key in option:
            return option  # type: ignore[no-any-return]
    return None


def _compare(event: str, path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    found: list[Change] = []
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        added = new_types - old_types
        if ANY in old_types or (added <= {"integer"} and "number" in old_types):
            found.append(Change(event, path, f"narrowed to {_names(new_types)}", False))
        elif added:
            what = f"retyped from {_names(old_types)} to {_names(new_types)}"
            found.append(Change(event, path, what, True))
        else:
            found.append(Change(event, path, f"narrowed to {_names(new_types)}", False))
    old_enum, new_enum = _member(old, "enum"), _member(new, "enum")
    if old_enum is not None and new_enum is not None:
        dropped = [v for v in old_enum["enum"] if v not in new_enum["enum"]]
        new_values = [v for v in new_enum["enum"] if v not in old_enum["enum"]]
        if dropped:
            found.append(Change(event, path, f"enum narrowed: {dropped} no longer sent", True))
        if new_values:
            what = f"enum widened: {new_values} are new; consumers built against OLD refuse them"
            found.append(Change(event, path, what, True))
    old_object, new_object = _member(old, "properties"), _member(new, "properties")
    if old_object is not None and new_object is not None:
        found.extend(_compare_fields(event, path, old_object, new_object))
    old_items, new_items = _member(old, "items"), _member(new, "items")
    if old_items is not None and new_items is not None:
        found.extend(_compare(event, f"{path}[]", old_items["items"], new_items["items"]))
    return found


def _compare_fields(
    event: str, path: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Change]:
    found: list[Change] = []
    old_fields, new_fields = old["properties"], new["properties"]
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    for name in old_fields:
        where = f"{path}.{name}"
        if name not in new_fields:
            if name in old_required:
                found.append(Change(event, where, "required field removed", True))
            else:
                found.append(Change(event, where, "optional field removed", False))
            continue
        if name in old_required and name not in new_required:
            what = "required field made optional: producers may leave it out"
            found.append(Change(event, where, what, True))
        elif name not in old_required and name in new_required:
            found.append(Change(event, where, "optional field now always sent", False))
        found.extend(_compare(event, where, old_fields[name], new_fields[name]))
    for name in new_fields:
        if name not in old_fields:
            required = "required" if name in new_required else "optional"
            what = f"{required} field added (consumers ignore fields they do not know)"
            found.append(Change(event, f"{path}.{name}", what, False))
    return found


def _names(types: set[str]) -> str:
    return " | ".join(sorted(types))
