"""The console's pages: what a publisher put in a name or an id stays text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.console import pages

group = {
    "fingerprint": "abc123",
    "exception_type": "KeyError",
    "pattern": "'<script>x</script>'",
    "count": 2,
    "first_seen": None,
    "last_seen": None,
    "sample": {
        "routing_key": "a.b",
        "exception": "KeyError",
        "event": None,
        "body": "</pre><script>alert(1)</script>",
        "traceback": "",
    },
    "events": [{"id": "x');alert(1);//", "routing_key": "a.b"}],
}


def test_an_event_id_with_a_quote_cannot_end_the_confirmation_script() -> None:
    html = pages.dead_letters_page(
        [{"subscriber": "bill'ing", "count": 2, "unreadable": "", "groups": [group]}],
        [],
        None,
        can_act=True,
        csrf="token",
        logged_in=True,
        read_only=False,
    )
    assert html.count("<script>") == 1, "the page's own script only"
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)" in html, "the body shown as text"
    assert 'data-ask="Replay event x&#x27;);alert(1);//?"' in html
    assert html.count('onsubmit="return confirm(this.dataset.ask)"') == 4
    assert "<script>x</script>" not in html
    assert 'href="/dead-letters/bill%27ing"' in html


@given(st.text(max_size=40))
def test_no_name_reaches_the_page_unescaped(text: str) -> None:
    name = f"<zz\"zz'{text}"
    subscriber = {
        "name": name,
        "binding_keys": [name],
        "consumers": 1,
        "waiting": 0,
        "unacked": 0,
        "dead_letters": 1,
        "retries_waiting": 0,
        "services": [name],
        "rate_in": 0.0,
        "rate_out": 0.0,
        "partitions": [
            {
                "queue": name,
                "waiting": 0,
                "unacked": 0,
                "consumers": 1,
                "active_service": name,
                "active_connection": name,
            }
        ],
    }
    drawn = {
        "exchange": name,
        "archive": {"name": name, "events": 1, "max_age": name, "max_bytes": None},
        "publishers": [name],
        "publish_rates": {name: 1.5},
        "subscribers": [subscriber],
        "watching_keys": True,
        "routing_keys": [{"routing_key": name, "count": 1, "last_seen": 0.0, "subscribers": []}],
    }
    html = pages.map_fragment(drawn)
    assert "<zz" not in html, "a tag"
    assert 'zz"' not in html, "the end of an attribute"
