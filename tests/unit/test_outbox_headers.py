"""The headers an outbox row keeps, and which headers its publish carries (no broker)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker import observability
from domain_event_broker.outbox.store import PendingEvent, decode_headers, encode_headers

header_values = st.one_of(st.text(), st.integers(), st.booleans(), st.none())
headers = st.dictionaries(st.text(min_size=1), header_values, max_size=5)


@given(headers)
def test_stored_headers_come_back_as_written(written: dict[str, Any]) -> None:
    assert decode_headers(encode_headers(written)) == (written or None)


@given(st.text())
def test_unreadable_stored_headers_are_ignored_not_raised(text: str) -> None:
    decoded = decode_headers(text)
    assert decoded is None or isinstance(decoded, dict)


def test_a_row_with_stored_headers_is_published_with_them_and_nothing_injected() -> None:
    calls: list[tuple[str, str | None]] = []

    def injector(routing_key: str, message_id: str | None) -> dict[str, Any]:
        calls.append((routing_key, message_id))
        return {"traceparent": "relay's own", "x-other": "relay"}

    remove = observability.add_header_injector(injector)
    try:
        row = PendingEvent(1, "{}", "shop.placed", "e1", 0, '{"traceparent":"writer\'s"}')
        message = row.message()
        assert message.injected and message.body == b"{}"
        sent = observability.message_headers(
            message.routing_key, message.message_id, message.headers, message.injected
        )
        assert sent == {"traceparent": "writer's"}
        assert calls == [("shop.placed", "e1")]  # a tracer still sees the publish

        bare = PendingEvent(2, "{}", "shop.placed", "e2").message()
        assert not bare.injected
        assert observability.message_headers("shop.placed", "e2", bare.headers) == {
            "traceparent": "relay's own",
            "x-other": "relay",
        }
    finally:
        remove()


def test_outbox_headers_tell_injectors_the_event_is_published_later() -> None:
    seen: list[bool] = []

    def injector(routing_key: str, message_id: str | None) -> dict[str, Any]:
        seen.append(observability.publishing_later())
        return {"traceparent": "x"}

    remove = observability.add_header_injector(injector)
    try:
        assert observability.outbox_headers("shop.placed", "e1") == {"traceparent": "x"}
        assert observability.outgoing_headers("shop.placed", "e1") == {"traceparent": "x"}
    finally:
        remove()
    assert seen == [True, False]
    assert observability.outbox_headers("shop.placed", "e1") is None  # no injector: no headers
