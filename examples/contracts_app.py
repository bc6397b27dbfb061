"""Typed events: an order service's contract, checked where it is published and where it is read.

    python examples/contracts_app.py            # consume (Ctrl-C stops)
    python examples/contracts_app.py publish    # publish a v2 event, a v1 event and a bad one
    domain-events asyncapi examples.contracts_app --yaml    # the AsyncAPI document

``domain-events asyncapi`` and ``domain-events check`` import this module with
no broker configured: ``Subscriber()`` then connects nowhere and declares nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from domain_event_broker import DomainEvent, Subscriber
from domain_event_broker.contracts import ContractViolation, event_type, publish_event


@dataclass
class OrderLine:
    sku: str
    quantity: int


@dataclass
class OrderPlacedData:
    order_id: str
    total_cents: int
    currency: Literal["EUR", "USD"]
    lines: list[OrderLine] = field(default_factory=list)
    note: str | None = None


@dataclass
class OrderPlacedDataV1:
    """What version 1 of the order service sent: a float total, in euros."""

    order_id: str
    total: float


OrderPlaced = event_type("order.placed", OrderPlacedData, version=2)
OrderPlacedV1 = event_type("order.placed", OrderPlacedDataV1, version=1)


@OrderPlaced.upcast(from_version=1)
def total_in_cents(data: dict[str, Any]) -> dict[str, Any]:
    """The one place a v1 body becomes a v2 body."""
    return {
        "order_id": data["order_id"],
        "total_cents": round(data["total"] * 100),
        "currency": "EUR",
    }


class OrderCancelledData(TypedDict):
    order_id: str
    reason: str


OrderCancelled = event_type("order.cancelled", OrderCancelledData)


def reserve_stock(event: OrderPlaced) -> None:  # type: ignore[valid-type]
    data: OrderPlacedData = event.data
    print(f"reserving {len(data.lines)} lines for order {data.order_id} ({data.total_cents})")


def refund(event: OrderCancelled) -> None:  # type: ignore[valid-type]
    print(f"refunding order {event.data['order_id']}: {event.data['reason']}")


def audit(event: DomainEvent) -> None:
    """Untyped, as in 3.x: every order event, whatever its version."""
    print(f"audit: {event.routing_key} {event.data}")


subscriber = Subscriber()
subscriber.register(reserve_stock, "stock-reservations", dead_letter=True, max_retries=3)
subscriber.register(refund, "refunds", [OrderCancelled], dead_letter=True)
subscriber.register(audit, "order-audit", ["order.#"])


def publish() -> None:
    publish_event(OrderPlaced(OrderPlacedData("o-1", 1250, "EUR", [OrderLine("sku-1", 2)])))
    publish_event(OrderPlacedV1(OrderPlacedDataV1("o-2", 9.99)))  # an old publisher
    publish_event(OrderCancelled({"order_id": "o-1", "reason": "out of stock"}))
    try:
        publish_event(OrderPlaced(OrderPlacedData("o-3", 100, "GBP")))  # type: ignore[arg-type]
    except ContractViolation as error:
        print(f"not sent: {error}")


if __name__ == "__main__":
    if sys.argv[1:] == ["publish"]:
        publish()
    else:
        subscriber.start_consuming()
