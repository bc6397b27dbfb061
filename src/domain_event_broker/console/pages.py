"""The console's pages: HTML and an SVG map drawn from the model's dicts, every text escaped.

No templates, no JavaScript framework: a page is a string. Forms carry the
session's CSRF token; a read-only or logged-out page has no form that acts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import quote

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header .who{margin-left:auto}
main{padding:1em 1.5em}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d5d9e0;padding:.3em .6em;text-align:left;vertical-align:top}
.group{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:.8em;margin:.8em 0}
.count{font-size:1.4em;font-weight:600}pre{background:#f0f2f5;padding:.5em;overflow:auto;
max-height:16em;font-size:.85em}.done{background:#e6f4ea;padding:.5em;margin:.3em 0}
.failed{background:#fde8e8;padding:.5em}.note{color:#5a6475}
button{cursor:pointer}svg text{font-size:12px}.node rect{fill:#fff;stroke:#5a6475}
.node:hover rect{fill:#eef4ff}.pub rect{fill:#eaf7ee}.ex rect{fill:#fff6e0}
.dead{fill:#b3261e;font-weight:600}
"""

REFRESH_MAP = """
<script>
setInterval(async () => {
  const reply = await fetch('/map.fragment');
  if (reply.ok) document.getElementById('map').innerHTML = await reply.text();
}, 5000);
</script>
"""

WATCH_JOB = """
<script>
const bar = document.getElementById('job');
if (bar) {
  const timer = setInterval(async () => {
    const job = await (await fetch('/api/jobs/' + bar.dataset.job)).json();
    bar.max = Math.max(job.total, 1); bar.value = job.visited;
    document.getElementById('job-text').textContent =
      job.visited + ' of ' + job.total + ' looked at, ' + job.matched + ' matched';
    if (job.done) { clearInterval(timer); location.replace(location.pathname); }
  }, 300);
}
</script>
"""


def page(title: str, body: str, *, logged_in: bool, read_only: bool, csrf: str = "") -> str:
    if read_only:
        who = '<span class="who">read-only</span>'
    elif logged_in:
        who = (
            '<form class="who" method="post" action="/logout">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            "<button>Log out</button></form>"
        )
    else:
        who = '<a class="who" href="/login">Log in to act</a>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)} · domain-events console</title><style>{STYLE}</style></head>"
        '<body><header><strong>domain-events</strong><a href="/">Event map</a>'
        '<a href="/dead-letters">Dead letters</a><a href="/outbox">Outbox</a>'
        f"{who}</header><main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def login_page(error: str = "") -> str:
    shown = f'<p class="failed">{escape(error)}</p>' if error else ""
    return page(
        "Log in",
        f"{shown}<form method=post action=/login><label>Console token "
        '<input type="password" name="token" autofocus></label> <button>Log in</button></form>'
        '<p class="note">The token is $DOMAIN_EVENT_BROKER_CONSOLE_TOKEN, or the one '
        "<code>domain-events console</code> printed when it started.</p>",
        logged_in=False,
        read_only=False,
    )


# The event map ------------------------------------------------------------------------
BOX_HEIGHT = 74
GAP = 14
#: The height the map needs to draw the archive under the exchange.
ARCHIVE_ROOM = 220


def map_page(drawn: dict[str, Any], **who: Any) -> str:
    return page(
        "Event map",
        '<p class="note">Refreshes every 5 s. Figures are the broker\'s (statistics up to 5 s '
        "old). Click a subscriber for its dead letters.</p>"
        f'<div id="map">{map_fragment(drawn)}</div>' + REFRESH_MAP,
        **who,
    )


def map_fragment(drawn: dict[str, Any]) -> str:
    """What the map page refreshes: the picture and the keys seen."""
    return map_svg(drawn) + keys_table(drawn)


def keys_table(drawn: dict[str, Any]) -> str:
    """The routing keys seen on recent events, and whom each reaches."""
    if not drawn.get("watching_keys"):
        return ""
    # With an archive an event no subscriber takes is kept; without one it is lost.
    unreached = (
        '<span class="note">no subscriber: kept only in the archive</span>'
        if drawn.get("archive")
        else '<span class="dead">no subscriber: these events are dropped</span>'
    )
    rows = [
        f'<tr class="seen-key" data-key="{escape(seen["routing_key"])}">'
        f"<td>{escape(seen['routing_key'])}</td><td>{seen['count']}</td><td>"
        + (escape(", ".join(seen["subscribers"])) if seen["subscribers"] else unreached)
        + "</td></tr>"
        for seen in drawn["routing_keys"]
    ]
    return (
        "<h2>Routing keys seen (last 5 minutes, since the console started)</h2>"
        "<table><tr><th>routing key</th><th>events</th><th>reaches</th></tr>"
        + ("".join(rows) or '<tr><td colspan="3">none yet</td></tr>')
        + "</table>"
    )


def map_svg(drawn: dict[str, Any]) -> str:
    publishers: Sequence[str] = drawn["publishers"]
    rates: dict[str, float] = drawn.get("publish_rates") or {}
    subscribers: Sequence[dict[str, Any]] = drawn["subscribers"]
    rows = max(len(publishers), len(subscribers), 1)
    archive = drawn.get("archive")
    # Room under the exchange for the archive.
    height = max(rows * (BOX_HEIGHT + GAP) + GAP, ARCHIVE_ROOM if archive else 0)
    exchange_y = height / 2 - 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="{height}">']
    for index, service in enumerate(publishers):
        y = GAP + index * (BOX_HEIGHT + GAP)
        parts.append(
            f'<line x1="180" y1="{y + 20}" x2="400" y2="{exchange_y + 20}" stroke="#8a94a6"/>'
            f'<g class="node pub" data-service="{escape(service)}"><title>service '
            f"{escape(service)} publishes to {escape(drawn['exchange'])}</title>"
            f'<rect x="10" y="{y}" width="170" height="40" rx="6"/>'
            f'<text x="20" y="{y + 24}">{escape(service)}</text><text x="172" y="{y + 24}" '
            f'text-anchor="end" class="rate">{rates.get(service, 0.0):.1f}/s</text></g>'
        )
    parts.append(
        f'<g class="node ex"><title>topic exchange {escape(drawn["exchange"])}</title>'
        f'<rect x="400" y="{exchange_y}" width="160" height="40" rx="6"/>'
        f'<text x="412" y="{exchange_y + 24}">{escape(drawn["exchange"])}</text></g>'
    )
    if archive:
        parts.append(_archive_box(archive, drawn["exchange"], exchange_y + 70))
    for index, subscriber in enumerate(subscribers):
        parts.append(_subscriber_box(subscriber, GAP + index * (BOX_HEIGHT + GAP), exchange_y))
    parts.append("</svg>")
    return "".join(parts)


def _archive_box(archive: dict[str, Any], exchange: str, y: float) -> str:
    name = escape(archive["name"])
    age = archive["max_age"] or "for good"
    size = "" if archive["max_bytes"] is None else f", at most {archive['max_bytes']} bytes"
    return (
        f'<line x1="480" y1="{y - 30}" x2="480" y2="{y}" stroke="#8a94a6"/>'
        f'<g class="node archive" data-archive="{name}"><title>archive {name}: every event of '
        f"{escape(exchange)} (bound with #), {archive['events']} kept; max age {escape(age)}"
        f"{size}</title>"
        f'<rect x="400" y="{y}" width="160" height="44" rx="6"/>'
        f'<text x="412" y="{y + 17}">archive</text>'
        f'<text x="412" y="{y + 35}"><tspan class="events">{archive["events"]}</tspan> events · '
        f'<tspan class="retention">{escape(age)}</tspan></text></g>'
    )


def _partitions_text(subscriber: dict[str, Any]) -> tuple[str, str]:
    """What the box says of an ordered subscriber's partitions, and what hovering says."""
    partitions = subscriber["partitions"]
    if not partitions:
        return "", ""
    active = sum(1 for one in partitions if one["active_service"])
    shown = (
        f' · <tspan class="partitions">{len(partitions)} partitions</tspan>'
        f' (<tspan class="active">{active}</tspan> active)'
    )
    each = "; ".join(
        f"{one['queue']}: {one['waiting'] + one['unacked']} waiting, "
        + (
            f"active on {one['active_service']} ({one['active_connection']})"
            if one["active_service"]
            else "no active consumer"
        )
        for one in partitions
    )
    return shown, f"; ordered by domain_object_id over {len(partitions)} partitions: {each}"


def _subscriber_box(subscriber: dict[str, Any], y: float, exchange_y: float) -> str:
    name = escape(subscriber["name"])
    keys = escape(", ".join(subscriber["binding_keys"]))
    dead = subscriber["dead_letters"]
    services = escape(", ".join(subscriber["services"]) or "no consumer")
    waiting = subscriber["waiting"] + subscriber["unacked"]
    details = (
        f"{subscriber['name']}: keys {', '.join(subscriber['binding_keys'])}; consumed by "
        f"{', '.join(subscriber['services']) or 'nobody'}; {waiting} waiting; "
        f"{subscriber['retries_waiting']} retries waiting; "
        f"{'no dead-letter queue' if dead is None else f'{dead} dead letters'}"
    )
    partitions, partition_details = _partitions_text(subscriber)
    dead_class = "dead" if dead else "no-dead"
    dead_text = "" if dead is None else f'<tspan class="{dead_class}">{dead} dead</tspan>'
    return (
        f'<line x1="560" y1="{exchange_y + 20}" x2="640" y2="{y + 20}" stroke="#8a94a6"/>'
        f'<a href="/dead-letters/{escape(quote(subscriber["name"], safe=""))}">'
        f'<g class="node sub" data-subscriber="{name}">'
        f"<title>{escape(details + partition_details)}</title>"
        f'<rect x="640" y="{y}" width="350" height="{BOX_HEIGHT}" rx="6"/>'
        f'<text x="650" y="{y + 16}"><tspan font-weight="600">{name}</tspan>{partitions}</text>'
        f'<text x="650" y="{y + 32}">keys: <tspan class="keys">{keys}</tspan></text>'
        f'<text x="650" y="{y + 48}"><tspan class="consumers">{subscriber["consumers"]}'
        f"</tspan> consumer{'' if subscriber['consumers'] == 1 else 's'} ({services})</text>"
        f'<text x="650" y="{y + 64}"><tspan class="depth">{waiting}</tspan> waiting · '
        f"{subscriber['rate_in']:.1f}/s in · {subscriber['rate_out']:.1f}/s out · "
        f"{subscriber['retries_waiting']} retrying · {dead_text}</text></g></a>"
    )


# Dead letters -------------------------------------------------------------------------
def dead_letters_page(
    listed: Sequence[dict[str, Any]],
    finished: Sequence[dict[str, Any]],
    running: dict[str, Any] | None,
    *,
    can_act: bool,
    csrf: str,
    **who: Any,
) -> str:
    parts = []
    if running is not None:
        parts.append(
            f'<div class="done">{escape(running["what"])}: <progress id="job" '
            f'data-job="{running["id"]}" max="{max(running["total"], 1)}" value="0"></progress> '
            '<span id="job-text"></span></div>'
        )
    for job in finished:
        kind = "failed" if job["error"] else "done"
        parts.append(
            f'<div class="{kind} action">{escape(job["started"])} {escape(job["what"])}: '
            f"{escape(job['error'] or job['summary'])}</div>"
        )
    for subscriber in listed:
        parts.append(_subscriber_letters(subscriber, can_act, csrf))
    if not listed:
        parts.append("<p>No subscriber with a dead-letter queue.</p>")
    return page("Dead letters", "".join(parts) + WATCH_JOB, csrf=csrf, **who)


def _subscriber_letters(subscriber: dict[str, Any], can_act: bool, csrf: str) -> str:
    name = subscriber["subscriber"]
    parts = [
        f'<section class="subscriber" data-subscriber="{escape(name)}"><h2>'
        f'<a href="/dead-letters/{escape(quote(name, safe=""))}">{escape(name)}</a>: '
        f"{subscriber['count']} dead letters in {len(subscriber['groups'])} groups</h2>"
    ]
    if subscriber["unreadable"]:
        parts.append(f'<p class="failed">{escape(subscriber["unreadable"])}</p>')
    for group in subscriber["groups"]:
        sample = group["sample"]
        shown = json.dumps(sample["event"], indent=2) if sample["event"] else sample["body"]
        title = f"{group['exception_type']}: {group['pattern']}".lstrip(": ")
        parts.append(
            f'<div class="group" data-fingerprint="{group["fingerprint"]}">'
            f'<span class="count">{group["count"]}</span> &times; <strong class="failure">'
            f"{escape(title)}</strong><br><span class=note>first seen "
            f"{escape(group['first_seen'] or '?')}, last seen "
            f"{escape(group['last_seen'] or '?')}</span>"
        )
        if can_act:
            parts.append(_group_actions(name, group, csrf))
        parts.append(
            f"<details><summary>Sample ({escape(sample['routing_key'])}): "
            f"{escape(sample['exception'] or '')}</summary><pre>{escape(shown or '')}</pre>"
            f"<pre class=traceback>{escape(sample['traceback'] or 'no traceback recorded')}"
            "</pre></details><details><summary>Events</summary><table>"
        )
        for event in group["events"]:
            parts.append(
                f"<tr><td>{escape(event['id'] or '(not an event)')}</td>"
                f"<td>{escape(event['routing_key'])}</td><td>"
            )
            if can_act and event["id"]:
                parts.append(_event_actions(name, event["id"], csrf))
            parts.append("</td></tr>")
        parts.append("</table></details></div>")
    parts.append("</section>")
    return "".join(parts)


def _action_form(action: str, fields: dict[str, str], csrf: str, label: str, ask: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{key}" value="{escape(value)}">'
        for key, value in fields.items()
    )
    # The question travels as data, never inside the script: names and event ids come
    # from whoever published, and a quote in one must not end the script's string.
    return (
        f'<form method="post" action="{action}" style="display:inline" '
        f'data-ask="{escape(ask)}" onsubmit="return confirm(this.dataset.ask)">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">{hidden}'
        f"<button>{escape(label)}</button></form> "
    )


def _group_actions(subscriber: str, group: dict[str, Any], csrf: str) -> str:
    fields = {"subscriber": subscriber, "group": group["fingerprint"]}
    count = group["count"]
    return (
        "<div>"
        + _action_form(
            "/dead-letters/replay",
            fields,
            csrf,
            f"Replay {count}",
            f"Replay these {count} events to {subscriber}?",
        )
        + _action_form(
            "/dead-letters/discard",
            fields,
            csrf,
            f"Discard {count}",
            f"Discard these {count} events for good?",
        )
        + "</div>"
    )


def _event_actions(subscriber: str, event_id: str, csrf: str) -> str:
    fields = {"subscriber": subscriber, "event": event_id}
    return _action_form(
        "/dead-letters/replay", fields, csrf, "Replay", f"Replay event {event_id}?"
    ) + _action_form(
        "/dead-letters/discard", fields, csrf, "Discard", f"Discard event {event_id} for good?"
    )


# The outbox ---------------------------------------------------------------------------
def outbox_page(view: dict[str, Any] | None, *, can_act: bool, csrf: str, **who: Any) -> str:
    if view is None:
        body = (
            "<p>No outbox: start the console with <code>--database-url</code> (SQLAlchemy "
            "outbox table) to see it.</p>"
        )
        return page("Outbox", body, csrf=csrf, **who)
    age = view["oldest_pending_age_seconds"]
    parts = [
        f"<table><tr><th>pending</th><td id=pending>{view['pending']}</td></tr>"
        f"<tr><th>waiting for a retry</th><td>{view['retrying']}</td></tr>"
        f"<tr><th>parked</th><td id=parked>{view['parked']}</td></tr>"
        f"<tr><th>oldest pending</th><td>{'-' if age is None else f'{age:.0f} s'}</td></tr>"
        "</table><h2>Parked rows</h2>"
    ]
    if can_act and view["parked_rows"]:
        parts.append(
            _action_form("/outbox/retry", {}, csrf, "Retry all", "Retry every parked row?")
            + _action_form("/outbox/discard", {}, csrf, "Discard all", "Discard parked rows?")
        )
    parts.append(
        "<table><tr><th>id</th><th>routing key</th><th>event</th><th>attempts</th>"
        "<th>last error</th><th>parked at</th><th></th></tr>"
    )
    for row in view["parked_rows"]:
        parts.append(
            f'<tr class="parked" data-id="{row["id"]}"><td>{row["id"]}</td>'
            f"<td>{escape(row['routing_key'])}</td><td>{escape(row['uuid_string'])}</td>"
            f"<td>{row['attempts']}</td><td>{escape(row['last_error'] or '')}</td>"
            f"<td>{escape(row['parked_at'])}</td><td>"
        )
        if can_act:
            ids = {"ids": str(row["id"])}
            parts.append(
                _action_form("/outbox/retry", ids, csrf, "Retry", f"Retry row {row['id']}?")
                + _action_form("/outbox/discard", ids, csrf, "Discard", f"Discard row {row['id']}?")
            )
        parts.append("</td></tr>")
    parts.append("</table>")
    return page("Outbox", "".join(parts), csrf=csrf, **who)
