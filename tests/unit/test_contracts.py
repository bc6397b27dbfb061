"""Event contracts without a broker: validation, versions, typed handlers, compatibility."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from domain_event_broker import DomainEvent, transport
from domain_event_broker.cli import main
from domain_event_broker.contracts import (
    ContractViolation,
    TypedHandler,
    event_type,
    publish_event,
    typed_registration,
)
from domain_event_broker.contracts.compatibility import changes
from domain_event_broker.contracts.shapes import schema
from domain_event_broker.testing import InMemoryBroker


@dataclass
class Line:
    sku: str
    quantity: int


@dataclass
class Order:
    order_id: str
    total: float
    paid: bool
    lines: list[Line]
    tags: dict[str, int] = field(default_factory=dict)
    note: Optional[str] = None  # noqa: UP045 (Optional is one of the forms to support)
    coupon: str | None = None
    status: Literal["new", "paid"] = "new"


class Cancelled(TypedDict):
    order_id: str
    reason: str


class Priced(BaseModel):
    sku: str
    cents: int


OrderPlaced = event_type("order.placed", Order)
OrderCancelled = event_type("order.cancelled", Cancelled, version=3)
PriceChanged = event_type("price.changed", Priced)

VALID = {"order_id": "o-1", "total": 3, "paid": False, "lines": [{"sku": "a", "quantity": 2}]}


def received(kind: Any, data: Any, version: int | None = None) -> Any:
    event = DomainEvent(kind.routing_key_of_type, data)
    event.version = version
    return kind.from_event(event)


@pytest.mark.parametrize(
    ("change", "field_path", "problem"),
    [
        ({"order_id": None}, "data.order_id", "expected a string, got NoneType None"),
        ({"total": "3"}, "data.total", "expected a number"),
        ({"paid": 1}, "data.paid", "expected true or false, got int 1"),
        ({"lines": {}}, "data.lines", "expected a list"),
        ({"lines": [{"sku": "a"}]}, "data.lines[0].quantity", "is required but missing"),
        ({"lines": [{"sku": "a", "quantity": True}]}, "data.lines[0].quantity", "an integer"),
        ({"tags": {"x": 1.5}}, "data.tags.x", "expected an integer"),
        ({"note": 5}, "data.note", "expected a string, got int 5"),
        ({"coupon": []}, "data.coupon", "expected a string"),
        ({"status": "sent"}, "data.status", "expected one of ['new', 'paid']"),
        ({"order_id": ...}, "data.order_id", "is required but missing"),
    ],
)
def test_a_body_that_breaks_the_contract_names_the_field(
    change: dict[str, Any], field_path: str, problem: str
) -> None:
    body = {**VALID, **change}
    body = {key: value for key, value in body.items() if value is not ...}
    with pytest.raises(ContractViolation) as raised:
        received(OrderPlaced, body)
    assert raised.value.field == field_path
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"order.placed v1: field {field_path}: ")
    assert isinstance(raised.value, ValueError)


def test_a_valid_body_becomes_the_data_type_and_unknown_fields_are_kept() -> None:
    event = received(OrderPlaced, {**VALID, "added_later": 1, "note": None})
    assert event.data == Order("o-1", 3.0, False, [Line("a", 2)])
    assert event.extra_fields == {"added_later": 1}
    cancelled = received(OrderCancelled, {"order_id": "o", "reason": "r", "by": "me"})
    assert cancelled.data == {"order_id": "o", "reason": "r", "by": "me"}


def test_pydantic_models_validate_as_pydantic_says() -> None:
    assert received(PriceChanged, {"sku": "a", "cents": 5}).data == Priced(sku="a", cents=5)
    with pytest.raises(ContractViolation) as raised:
        received(PriceChanged, {"sku": "a", "cents": "lots"})
    assert raised.value.field == "data.cents"
    with pytest.raises(ContractViolation, match=r"data\.sku"):
        publish_event(PriceChanged({"cents": 1}), None)  # type: ignore[arg-type]


def test_publishing_checks_first_and_carries_the_version() -> None:
    event = OrderCancelled({"order_id": "o", "reason": "r"})
    assert publish_event(event, None) is event
    assert event.version == 3
    with pytest.raises(ContractViolation, match=r"order.cancelled v3: field data\.reason"):
        publish_event(OrderCancelled({"order_id": "o"}), None)  # type: ignore[typeddict-item]
    body = json.loads(OrderPlaced(Order("o", 1.5, True, [Line("s", 1)])).to_json())
    assert body["data"]["lines"] == [{"sku": "s", "quantity": 1}]
    assert set(body) == {"routing_key", "data", "domain_object_id", "uuid_string", "timestamp"}


def test_upcasts_run_in_order_and_a_missing_one_is_a_violation() -> None:
    @dataclass
    class V3:
        name: str
        count: int

    kind = event_type("thing.happened", V3, version=3)

    @kind.upcast(from_version=1)
    def one(data: dict[str, Any]) -> dict[str, Any]:
        return {"name": data["title"]}

    @kind.upcast(from_version=2)
    def two(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "count": 0}

    assert received(kind, {"title": "t"}, version=1).data == V3("t", 0)
    assert received(kind, {"name": "t"}, version=2).data == V3("t", 0)
    assert received(kind, {"name": "t", "count": 2}, version=None).data == V3("t", 2)
    # A newer version reads as it is when it is compatible, and fails on the field when not.
    assert received(kind, {"name": "t", "count": 2, "new": 1}, version=4).data == V3("t", 2)
    with pytest.raises(ContractViolation, match=r"data\.count"):
        received(kind, {"name": "t"}, version=4)
    other = event_type("thing.happened", V3, version=2)
    with pytest.raises(ContractViolation, match=r"no upcast from it is registered"):
        received(other, {"title": "t"}, version=1)
    with pytest.raises(ContractViolation, match="the upcast from version 1 failed: KeyError"):
        received(kind, {"name": "t"}, version=1)
    with pytest.raises(ValueError, match="from_version must be an older version"):
        kind.upcast(from_version=3)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*VALID, "tags", "note", "status", "x"]), json_values))
def test_any_json_body_is_read_or_refused_with_a_violation(body: dict[str, Any]) -> None:
    try:
        event = received(OrderPlaced, {**VALID, **body})
    except ContractViolation as error:
        assert error.field.startswith("data")
    else:
        assert json.loads(event.to_json())["data"]["order_id"] == event.data.order_id


@given(
    st.builds(
        Order,
        order_id=st.text(),
        total=st.floats(allow_nan=False, allow_infinity=False),
        paid=st.booleans(),
        lines=st.lists(st.builds(Line, sku=st.text(), quantity=st.integers())),
        note=st.none() | st.text(),
        status=st.sampled_from(["new", "paid"]),
    )
)
def test_what_a_publisher_sends_a_subscriber_reads_back(order: Order) -> None:
    sent = OrderPlaced(order)
    back = received(OrderPlaced, json.loads(sent.to_json())["data"])
    assert back.data == order or math.isnan(order.total)


def test_typed_registration() -> None:
    def untyped(event: DomainEvent) -> None:
        pass

    def typed(event: OrderPlaced) -> None:  # type: ignore[valid-type]
        pass

    assert typed_registration(untyped, ["a.b"]) == (untyped, ["a.b"])
    handler, keys = typed_registration(typed, ())
    assert isinstance(handler, TypedHandler) and keys == ("order.placed",)
    handler, keys = typed_registration(untyped, [OrderCancelled, "order.#"])
    assert keys == ("order.cancelled", "order.#")
    assert handler.event_types == (OrderCancelled,)


def test_the_in_memory_broker_delivers_typed_events_and_fails_invalid_ones() -> None:
    got: list[Any] = []

    def handle(event: OrderCancelled) -> None:  # type: ignore[valid-type]
        got.append(event.data)

    with InMemoryBroker() as broker:
        broker.register(handle, "refunds", dead_letter=True)
        publish_event(OrderCancelled({"order_id": "o", "reason": "r"}))
        broker.publish_domain_event("order.cancelled", {"order_id": "o"})
        broker.run()
        [dead] = broker.dead_letters("refunds")
    assert got == [{"order_id": "o", "reason": "r"}]
    assert isinstance(dead.exception, ContractViolation) and dead.exception.field == "data.reason"


def test_publish_event_calls_the_3x_patch_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test suites patch ``transport.Publisher.publish``: typed events go through it too."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        transport.Publisher, "publish", lambda self, *args, **kwargs: calls.append((args, kwargs))
    )
    event = OrderCancelled({"order_id": "o", "reason": "r"})
    publish_event(event, None)
    transport.Publisher(None).publish_event(event)
    assert len(calls) == 2
    for (body, routing_key), kwargs in calls:
        assert (json.loads(body)["data"], routing_key) == (event.data, "order.cancelled")
        assert kwargs["properties"].headers == {"x-domain-event-version": 3}
        assert kwargs["properties"].message_id == event.uuid_string


def test_the_in_memory_broker_upcasts_an_older_version() -> None:
    @dataclass
    class Old:
        title: str

    @dataclass
    class New:
        name: str

    old, new = event_type("doc.saved", Old), event_type("doc.saved", New, version=2)
    new.upcast(from_version=1)(lambda data: {"name": data["title"]})
    got: list[Any] = []
    with InMemoryBroker() as broker:
        broker.register(got.append, "indexer", [new])
        publish_event(old(Old("a")))
        publish_event(new(New("b")))
        broker.publish_domain_event("doc.saved", {"name": "c"})  # untyped: the current version
        broker.run()
    assert [event.data for event in got] == [New("a"), New("b"), New("c")]


# contracts check -------------------------------------------------------------------------
def document(*events: tuple[str, type, int]) -> dict[str, Any]:
    return {
        "asyncapi": "3.0.0",
        "components": {
            "messages": {
                key: {
                    "name": key,
                    "x-domain-event-version": version,
                    "payload": {"properties": {"data": schema(kind)}},
                }
                for key, kind, version in events
            }
        },
    }


NO_DEFAULT = dataclasses.MISSING
#: The fields of the contract consumers were built against: (type, default).
BASE: dict[str, tuple[Any, Any]] = {
    "id": (str, NO_DEFAULT),
    "n": (int, NO_DEFAULT),
    "kind": (Literal["x", "y"], NO_DEFAULT),
    "note": (Optional[str], None),  # noqa: UP045
    "lines": (list[Line], list),  # a factory: a fresh list per object
}


def variant(name: str, *removed: str, **changed: tuple[Any, Any]) -> type:
    """The base contract with fields removed or changed (type, default), as a dataclass."""
    fields = {key: value for key, value in {**BASE, **changed}.items() if key not in removed}
    ordered = sorted(fields.items(), key=lambda item: item[1][1] is not NO_DEFAULT)
    return dataclasses.make_dataclass(
        name,
        [
            (key, kind) if default is NO_DEFAULT else (key, kind, _default(default))
            for key, (kind, default) in ordered
        ],
    )


def _default(default: Any) -> Any:
    if default is list:
        return dataclasses.field(default_factory=list)
    return dataclasses.field(default=default)


@dataclass
class LineRetyped:
    sku: str
    quantity: str


A = variant("A")
Added = variant("Added", more=(str, NO_DEFAULT))
Narrowed = variant("Narrowed", kind=(Literal["x"], NO_DEFAULT))


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (A, []),
        (variant("RemovedRequired", "id"), [("data.id", "required field removed", True)]),
        (
            variant("Retyped", id=(int, NO_DEFAULT)),
            [("data.id", "retyped from string to integer", True)],
        ),
        (
            variant("RequiredMadeOptional", id=(Optional[str], None)),  # noqa: UP045
            [("data.id", "required field made optional", True), ("data.id", "retyped", True)],
        ),
        (Narrowed, [("data.kind", "enum narrowed: ['y'] no longer sent", True)]),
        (
            variant("Widened", kind=(Literal["x", "y", "z"], NO_DEFAULT)),
            [("data.kind", "enum widened: ['z'] are new", True)],
        ),
        (Added, [("data.more", "required field added", False)]),
        (variant("OptionalRemoved", "note"), [("data.note", "optional field removed", False)]),
        (
            variant("NestedRetyped", lines=(list[LineRetyped], BASE["lines"][1])),
            [("data.lines[].quantity", "retyped from integer to string", True)],
        ),
        (
            variant("NoteAlwaysSent", note=(str, NO_DEFAULT)),
            [
                ("data.note", "optional field now always sent", False),
                ("data.note", "narrowed", False),
            ],
        ),
    ],
)
def test_contract_changes_and_their_verdicts(
    new: type, expected: list[tuple[str, str, bool]]
) -> None:
    found = changes(document(("e.v", A, 1)), document(("e.v", new, 1)))
    assert [(c.path, c.breaks) for c in found] == [(p, b) for p, _, b in expected]
    for change, (_, what, _) in zip(found, expected, strict=True):
        assert change.what.startswith(what)


def test_event_types_removed_added_and_versions() -> None:
    found = changes(
        document(("gone", A, 1), ("kept", A, 1)), document(("kept", A, 2), ("new", A, 1))
    )
    assert [(c.event, c.what, c.breaks) for c in found] == [
        ("gone", "event type removed: producers no longer send it", True),
        ("kept", "version 1 -> 2", False),
        ("new", "event type added", False),
    ]


def test_contracts_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, same, broken = tmp_path / "old.json", tmp_path / "same.json", tmp_path / "broken.json"
    old.write_text(json.dumps(document(("e.v", A, 1))))
    same.write_text(json.dumps(document(("e.v", Added, 2))))
    broken.write_text(json.dumps(document(("e.v", Narrowed, 2))))
    assert main(["contracts", "check", str(old), str(same)]) == 0
    assert "0 breaking change(s) of 2" in capsys.readouterr().out
    assert main(["contracts", "check", str(old), str(broken)]) == 1
    out = capsys.readouterr().out
    assert "BREAKS e.v data.kind: enum narrowed: ['y'] no longer sent" in out
    assert main(["contracts", "check", str(old), str(tmp_path / "missing.json")]) == 2
    (tmp_path / "not.json").write_text("[1, 2]")
    assert main(["contracts", "check", str(old), str(tmp_path / "not.json")]) == 2
    assert "not an AsyncAPI 3 document" in capsys.readouterr().err
