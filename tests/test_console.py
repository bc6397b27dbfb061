"""The operator console in a real browser (Debian's chromium, driven by Playwright).

A vhost of its own: two publishing services, three subscribers, an ordered
subscriber over three partitions and the archive, 30 dead letters from two
failures. The console must draw them, group the dead letters, replay one group
back to the live handler and discard the other only once asked.
The screenshots in docs/ (console-map.png, console-dead-letters.png) are made here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import create_engine, select, update

from domain_event_broker import BrokerSettings, DomainEvent, Publisher, Subscriber
from domain_event_broker.console import Console, ConsoleServer, serve
from domain_event_broker.console.dead_letters import read_letters
from domain_event_broker.events import DomainEvent as Event
from domain_event_broker.history import enable_archive
from domain_event_broker.sqlalchemy import add_event, metadata, outbox_table
from domain_event_broker.sqlalchemy.outbox import SQLAlchemyOutboxStore
from domain_event_broker.sqlalchemy.tables import utc_now
from support import broker_at, queue_depth, rabbitmqctl, send_to_queue, wait_for

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"
TOKEN = "test-console-token"
FAILURES = 20  # KeyError: customer <n> unknown
OTHER_FAILURES = 10  # ValueError: amount -<n> is negative
PARTITIONS = 3  # the ordered subscriber ledger's
LEDGER_FAILURES = (5, 11)  # the orders ledger dead-letters


@pytest.fixture(scope="module")
def console_url() -> Iterator[str]:
    """A vhost of its own: the map shows exactly what these tests made."""
    vhost = f"deb-console-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield broker_at(vhost)
    rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def start(console_url: str, read_only: bool = False, watch: bool = False) -> ConsoleServer:
    console = Console(BrokerSettings(console_url))
    if watch:
        console.watch_routing_keys()
    server = serve(console, TOKEN, read_only=read_only)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Shop:
    """Two publishing services, three subscribers and an ordered one (ledger); billing's
    handler fails while told to, ledger's for two orders."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failing = True
        self.ledger_failing = True
        self.seen: list[DomainEvent] = []
        self.booked: list[int] = []
        self.lock = threading.Lock()
        self.publishers = [
            Publisher(BrokerSettings(url, service_name=service))
            for service in ("shop", "warehouse")
        ]
        self.subscribers: list[tuple[Subscriber, threading.Thread]] = []
        self._run("billing-service", self.bill, "billing", ["order.placed", "order.paid"])
        self._run("mail-service", lambda _event: None, "mailer", ["order.*"])
        self._run("stock-service", lambda _event: None, "stock", ["stock.#"])
        self._run(
            "ledger-service",
            self.book,
            "ledger",
            ["order.placed"],
            ordered_by="domain_object_id",
            partitions=PARTITIONS,
        )

    def book(self, event: DomainEvent) -> None:
        with self.lock:
            self.booked.append(event.data["n"])
        if self.ledger_failing and event.data["n"] in LEDGER_FAILURES:
            raise RuntimeError(f"ledger closed for order {event.data['n']}")

    def bill(self, event: DomainEvent) -> None:
        with self.lock:
            self.seen.append(event)
        if self.failing:
            number = event.data["n"]
            if number % 3 == 0:
                raise ValueError(f"amount -{number}.50 is negative")
            raise KeyError(f"customer {1000 + number} unknown")

    def _run(
        self,
        service: str,
        handler: Callable[[DomainEvent], None],
        name: str,
        keys: list[str],
        **options: Any,
    ) -> None:
        subscriber = Subscriber(BrokerSettings(self.url, service_name=service))
        subscriber.register(handler, name, keys, dead_letter=True, **options)
        thread = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 120})
        thread.start()
        self.subscribers.append((subscriber, thread))

    def publish_orders(self, count: int) -> None:
        for number in range(count):
            event = Event("order.placed", {"n": number}, domain_object_id=f"order-{number}")
            self.publishers[number % 2].publish(event.to_json(), "order.placed")

    def seen_ids(self) -> set[str]:
        with self.lock:
            return {event.uuid_string for event in self.seen}

    def stop(self) -> None:
        for subscriber, thread in self.subscribers:
            subscriber.stop_consuming()
            thread.join(30)
        for publisher in self.publishers:
            publisher.disconnect()


@pytest.fixture(scope="module")
def shop(console_url: str) -> Iterator[Shop]:
    enable_archive(console_url)
    running = Shop(console_url)
    # 30 orders: n % 3 == 0 fails with ValueError (10), the others with KeyError (20).
    running.publish_orders(FAILURES + OTHER_FAILURES)
    wait_for(lambda: queue_depth(console_url, "billing-dl") == 30, what="30 dead letters")
    wait_for(lambda: queue_depth(console_url, "ledger-dl") == 2, what="ledger's 2 dead letters")
    yield running
    running.stop()


def log_in(page: Page, server: ConsoleServer) -> None:
    page.goto(server.url + "login")
    page.fill("input[name=token]", TOKEN)
    page.click("form button")
    expect(page.locator("header")).to_contain_text("Log out")


def test_the_map_names_services_subscribers_bindings_and_counts(
    shop: Shop, console_url: str, browser: Browser
) -> None:
    server = start(console_url, watch=True)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        page.goto(server.url)
        # Keys seen from now on: each reaches the subscribers whose bindings match, or none.
        wait_for(lambda: server.console.watcher is not None and _watching(console_url))
        for key, count in (("order.cancelled", 2), ("stock.moved.north", 1), ("invoice.sent", 3)):
            for _ in range(count):
                shop.publishers[0].publish(Event(key, {}).to_json(), key)
        svg = page.locator("#map svg")
        # Who consumes comes from the broker's statistics (up to 5 s old); the page
        # refreshes itself every 5 s.
        expect(svg.locator('g[data-subscriber="billing"]')).to_contain_text(
            "billing-service", timeout=20_000
        )
        for service in ("shop", "warehouse"):
            expect(svg.locator(f'g.pub[data-service="{service}"]')).to_have_count(1)
        billing = svg.locator('g[data-subscriber="billing"]')
        expect(billing.locator(".keys")).to_have_text("order.paid, order.placed")
        expect(billing.locator(".consumers")).to_have_text("1")
        expect(billing.locator(".dead")).to_have_text("30 dead")
        expect(svg.locator('g[data-subscriber="mailer"] .keys')).to_have_text("order.*")
        expect(svg.locator('g[data-subscriber="stock"] .keys')).to_have_text("stock.#")
        # The ordered subscriber: one box over its partitions, each active in ledger-service.
        ledger = svg.locator('g[data-subscriber="ledger"]')
        expect(ledger.locator(".keys")).to_have_text("order.placed")
        expect(ledger.locator(".partitions")).to_have_text(f"{PARTITIONS} partitions")
        expect(ledger.locator(".active")).to_have_text(str(PARTITIONS), timeout=20_000)
        expect(ledger.locator(".consumers")).to_have_text(str(PARTITIONS))
        expect(ledger.locator(".depth")).to_have_text("0")
        expect(ledger.locator(".dead")).to_have_text("2 dead")
        expect(ledger.locator("title")).to_contain_text(
            "ledger-p002: 0 waiting, active on ledger-service"
        )
        expect(svg.locator("g.sub")).to_have_count(4)
        # Every event is kept in the archive: the 30 orders and the 6 published here.
        archive = svg.locator('g.archive[data-archive="domain-events-archive"]')
        expect(archive.locator(".events")).to_have_text("36", timeout=20_000)
        expect(archive.locator(".retention")).to_have_text("7D")
        seen = page.locator("tr.seen-key")
        expect(seen).to_have_count(3, timeout=15_000)  # the next refresh (every 5 s)
        expect(seen.nth(0)).to_have_text("invoice.sent3no subscriber: kept only in the archive")
        expect(seen.nth(1)).to_have_text("order.cancelled2mailer")
        expect(seen.nth(2)).to_have_text("stock.moved.north1stock")
        page.screenshot(path=str(DOCS / "console-map.png"), full_page=True)

        drawn = json.loads(urllib.request.urlopen(server.url + "api/map").read())
        assert drawn["publishers"] == ["shop", "warehouse"]
        names = [s["name"] for s in drawn["subscribers"]]
        assert names == ["billing", "ledger", "mailer", "stock"]
        drawn_ledger = drawn["subscribers"][1]
        assert drawn_ledger["binding_keys"] == ["order.placed"]
        assert (drawn_ledger["consumers"], drawn_ledger["dead_letters"]) == (PARTITIONS, 2)
        assert drawn_ledger["services"] == ["ledger-service"]
        assert [(p["queue"], p["active_service"]) for p in drawn_ledger["partitions"]] == [
            (f"ledger-p00{index}", "ledger-service") for index in range(PARTITIONS)
        ]
        assert drawn["subscribers"][0]["partitions"] == [], "billing is not ordered"
        archived = drawn["archive"]
        assert (archived["name"], archived["max_age"], archived["max_bytes"]) == (
            "domain-events-archive",
            "7D",
            None,
        )
        assert archived["events"] == 36
    finally:
        page.close()
        server.shutdown()
        server.console.close()


def _watching(url: str) -> bool:
    """Whether the console's own queue (server-named) is bound to the exchange yet."""
    vhost = url.rsplit("/", 1)[1]
    listed = rabbitmqctl("list_bindings", "-p", vhost, "destination_name", "routing_key", "-q")
    return any(line.startswith("amq.gen-") and line.endswith("\t#") for line in listed.splitlines())


def test_dead_letters_grouped_replay_one_group_discard_the_other(
    shop: Shop, console_url: str, browser: Browser
) -> None:
    server = start(console_url)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        log_in(page, server)
        page.goto(server.url + "dead-letters/billing")
        groups = page.locator("section[data-subscriber=billing] .group")
        expect(groups).to_have_count(2)
        expect(groups.nth(0).locator(".count")).to_have_text(str(FAILURES))
        expect(groups.nth(0).locator(".failure")).to_have_text("KeyError: 'customer <n> unknown'")
        expect(groups.nth(1).locator(".count")).to_have_text(str(OTHER_FAILURES))
        expect(groups.nth(1).locator(".failure")).to_have_text("ValueError: amount <n> is negative")
        groups.nth(0).locator("summary").first.click()
        expect(groups.nth(0).locator("pre.traceback")).to_contain_text("in bill")
        page.screenshot(path=str(DOCS / "console-dead-letters.png"), full_page=True)

        listed = json.loads(
            urllib.request.urlopen(server.url + "api/dead-letters?subscriber=billing").read()
        )[0]
        key_errors = {event["id"] for event in listed["groups"][0]["events"]}
        assert len(key_errors) == FAILURES
        # Reading took nothing away and changed no order.
        in_queue = [event.uuid_string for event in _dead_letters_in_order(console_url)]
        listed_again = json.loads(
            urllib.request.urlopen(server.url + "api/dead-letters?subscriber=billing").read()
        )[0]
        assert listed_again == listed
        in_groups = [e["id"] for group in listed["groups"] for e in group["events"]]
        assert sorted(in_groups) == sorted(in_queue)
        assert [e for e in in_queue if e in key_errors] == [
            event["id"] for event in listed["groups"][0]["events"]
        ]

        # Replay the KeyError group: exactly those 20 come back and the handler sees them.
        shop.failing = False
        before = len(shop.seen)
        page.once("dialog", lambda dialog: dialog.accept())
        groups.nth(0).locator("button", has_text=f"Replay {FAILURES}").click()
        expect(page.locator(".action.done")).to_contain_text(
            f"replayed {FAILURES} of 30 dead letters of billing; {OTHER_FAILURES} left"
        )
        job = json.loads(urllib.request.urlopen(server.url + "api/jobs/1").read())
        assert (job["total"], job["visited"], job["matched"], job["done"]) == (30, 30, 20, True)
        wait_for(lambda: len(shop.seen) >= before + FAILURES, what="replayed events handled")
        with shop.lock:
            again = {event.uuid_string for event in shop.seen[before:]}
        assert again == key_errors
        assert queue_depth(console_url, "billing-dl") == OTHER_FAILURES
        # The letters left kept their order.
        assert [event.uuid_string for event in _dead_letters_in_order(console_url)] == [
            event_id for event_id in in_queue if event_id not in key_errors
        ]
        expect(groups).to_have_count(1)

        # One event alone: replayed, seen by the handler; the other nine stay.
        groups.nth(0).locator("summary", has_text="Events").click()
        one = groups.nth(0).locator("tr").first
        event_id = one.locator("td").first.inner_text()
        page.once("dialog", lambda dialog: dialog.accept())
        one.locator("button", has_text="Replay").click()
        expect(page.locator(".action.done").first).to_contain_text(
            f"replayed 1 of {OTHER_FAILURES} dead letters of billing; {OTHER_FAILURES - 1} left"
        )
        wait_for(lambda: event_id in shop.seen_ids(), what="the replayed event handled")
        assert queue_depth(console_url, "billing-dl") == OTHER_FAILURES - 1
        before += 1
        left = OTHER_FAILURES - 1

        # Discard asks first: dismissed, nothing goes.
        page.once("dialog", lambda dialog: dialog.dismiss())
        groups.nth(0).locator("button", has_text=f"Discard {left}").click()
        page.wait_for_timeout(500)
        assert queue_depth(console_url, "billing-dl") == left
        asked: list[str] = []

        def accept(dialog: Any) -> None:
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        groups.nth(0).locator("button", has_text=f"Discard {left}").click()
        expect(page.locator(".action.done").first).to_contain_text(
            f"discarded {left} of {left} dead letters of billing; 0 left"
        )
        assert asked == [f"Discard these {left} events for good?"]
        assert queue_depth(console_url, "billing-dl") == 0
        assert len(shop.seen) == before + FAILURES, "discarded events are not handled"
    finally:
        page.close()
        server.shutdown()


def _dead_letters_in_order(url: str) -> list[DomainEvent]:
    """billing-dl's letters in queue order, looked at and given back (a connection of its own)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        letters = []
        while True:
            method, _properties, body = channel.basic_get("billing-dl")
            if method is None:
                return letters
            letters.append(DomainEvent.from_json(body))
    finally:
        connection.close()  # unacked: every letter goes back


def test_the_read_only_console_offers_no_action(
    shop: Shop, console_url: str, browser: Browser
) -> None:
    server = start(console_url, read_only=True)
    page = browser.new_page()
    try:
        for path in ("", "dead-letters", "outbox"):
            page.goto(server.url + path)
            expect(page.locator("header")).to_contain_text("read-only")
            assert page.locator("main form, main button").count() == 0
        request = urllib.request.Request(
            server.url + "dead-letters/discard", data=b"subscriber=billing&group=x", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 403
        assert refused.value.read() == b"this console is read-only: no actions"
    finally:
        page.close()
        server.shutdown()


def test_actions_need_a_login_and_the_csrf_token(shop: Shop, console_url: str) -> None:
    server = start(console_url)
    try:

        def post(path: str, body: bytes, cookie: str = "") -> tuple[int, str]:
            request = urllib.request.Request(server.url + path, data=body, method="POST")
            if cookie:
                request.add_header("Cookie", cookie)
            try:
                with urllib.request.urlopen(request) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        assert post("dead-letters/discard", b"subscriber=billing&group=x") == (
            403,
            "log in first (/login)",
        )
        assert post("login", b"token=wrong")[0] == 403

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as logged_in:
            opener.open(server.url + "login", data=f"token={TOKEN}".encode())
        cookie = logged_in.value.headers["Set-Cookie"].split(";")[0]
        assert post("dead-letters/discard", b"subscriber=billing&group=x", cookie) == (
            403,
            "stale or missing CSRF token: reload the page",
        )
        status, _text = post("outbox/retry", b"csrf=x", cookie)
        assert status == 403
        assert (json.loads(urllib.request.urlopen(server.url + "api/outbox").read())) is None
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "api/dead-letters?subscriber=nobody")
        assert missing.value.code == 404
        assert missing.value.read() == b"there is no subscriber 'nobody' with a dead-letter queue"
        with pytest.raises(urllib.error.HTTPError) as no_job:
            urllib.request.urlopen(server.url + "api/jobs/x1")
        assert no_job.value.code == 404
        assert TOKEN not in urllib.request.urlopen(server.url).read().decode()
        # A page of another site whose name now points at 127.0.0.1 (DNS rebinding).
        rebound = urllib.request.Request(server.url + "api/dead-letters")
        rebound.add_header("Host", f"attacker.example:{server.server_address[1]}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound)
        assert refused.value.code == 403
        assert refused.value.read() == b"this console answers on 127.0.0.1 only"
    finally:
        server.shutdown()


def test_the_outbox_view_retries_and_discards_parked_rows(
    console_url: str, browser: Browser, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(database)
    metadata.create_all(engine)
    with engine.begin() as connection:
        for number in range(5):
            add_event(connection, "order.placed", {"n": number})
        connection.execute(
            update(outbox_table)
            .where(outbox_table.c.id > 2)
            .values(parked_at=utc_now(), attempts=5, last_error="NOT_FOUND - no exchange")
        )
    store = SQLAlchemyOutboxStore(engine)
    server = serve(Console(BrokerSettings(console_url), outbox=store), TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        log_in(page, server)
        page.goto(server.url + "outbox")
        expect(page.locator("#pending")).to_have_text("2")
        expect(page.locator("#parked")).to_have_text("3")
        expect(page.locator("tr.parked")).to_have_count(3)
        expect(page.locator("tr.parked").first).to_contain_text("NOT_FOUND - no exchange")

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator('tr.parked[data-id="3"] button', has_text="Retry").click()
        expect(page.locator("#pending")).to_have_text("3")
        expect(page.locator("#parked")).to_have_text("2")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("main > form button", has_text="Discard all").click()
        expect(page.locator("#parked")).to_have_text("0")
        expect(page.locator("tr.parked")).to_have_count(0)

        view = json.loads(urllib.request.urlopen(server.url + "api/outbox").read())
        assert (view["pending"], view["parked"]) == (3, 0)
        with engine.connect() as connection:
            rows = connection.execute(select(outbox_table.c.id).order_by(outbox_table.c.id)).all()
        assert [row.id for row in rows] == [1, 2, 3], "row 3 retried, rows 4 and 5 discarded"
    finally:
        page.close()
        server.shutdown()
        engine.dispose()


def test_the_command_prints_where_it_listens_and_a_token_that_logs_in(console_url: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "DOMAIN_EVENT_BROKER_CONSOLE_TOKEN"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "domain_event_broker.cli",
            "--url",
            console_url,
            "console",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(
            r"console on (http://127\.0\.0\.1:\d+/) \(actions need the token\)", first
        )
        assert match, first
        token = process.stderr.readline().removeprefix("token: ").strip()
        assert len(token) >= 20
        assert "guest" not in first, "no password in what it prints"
        login = urllib.request.Request(
            match[1] + "login", data=f"token={token}".encode(), method="POST"
        )
        with urllib.request.urlopen(login) as reply:  # follows the redirect to the map
            assert reply.status == 200
    finally:
        process.terminate()
        process.wait(10)


def test_reading_gives_every_letter_back_and_a_queue_gone_meanwhile_reads_as_none(
    console_url: str, make_subscriber: Callable[..., Subscriber]
) -> None:
    subscriber = make_subscriber(console_url)
    for name in ("reader-a", "reader-b"):
        subscriber.register(lambda _event: None, name, [f"{name}.#"], dead_letter=True)
    sent = {"reader-a": 3, "reader-b": 2}
    for name, count in sent.items():
        for number in range(count):
            body = Event(f"{name}.made", {"n": number}).to_json().encode()
            send_to_queue(console_url, f"{name}-dl", body, {"x-domain-event-exception-type": "E"})
    read = read_letters(
        BrokerSettings(console_url), {"reader-a": None, "reader-ghost": None, "reader-b": None}
    )
    assert [(one.subscriber, one.count) for one in read] == [
        ("reader-a", 3),
        ("reader-ghost", 0),
        ("reader-b", 2),
    ]
    assert [json.loads(letter.body)["data"]["n"] for letter in read[0].letters] == [0, 1, 2]
    for name, count in sent.items():
        wait_for(lambda name=name, count=count: queue_depth(console_url, f"{name}-dl") == count)
    again = read_letters(BrokerSettings(console_url), {"reader-a": None})
    assert [letter.body for letter in again[0].letters] == [
        letter.body for letter in read[0].letters
    ]


def test_no_password_in_any_page_answer_or_log_line(
    shop: Shop, console_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = f"console-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    vhost = console_url.rsplit("/", 1)[1]
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_user_tags", user, "monitoring")
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        url = console_url.replace("guest:guest@", f"{user}:{password}@")
        server = serve(Console(BrokerSettings(url)), TOKEN)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            answers = [
                urllib.request.urlopen(server.url + path).read().decode()
                for path in ("", "api/map", "dead-letters", "api/dead-letters", "outbox", "login")
            ]
            assert "billing" in answers[1]
            for path in ("api/jobs/1", "dead-letters/nobody", "nowhere"):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(server.url + path)
                answers.append(refused.value.read().decode())
        finally:
            server.shutdown()
        assert not [answer for answer in answers if password in answer]
        assert password not in caplog.text
    finally:
        rabbitmqctl("delete_user", user)


def test_the_map_shows_how_fast_each_service_publishes(
    shop: Shop, console_url: str, browser: Browser
) -> None:
    """About 10 events a second from the service ticker: the broker's rate, on the map."""
    ticker = Publisher(BrokerSettings(console_url, service_name="ticker"))
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.1):
            ticker.publish(Event("tick.tock", {}).to_json(), "tick.tock")

    ticking = threading.Thread(target=tick)
    ticking.start()
    server = start(console_url)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:

        def ticker_rate() -> float:
            drawn = json.loads(urllib.request.urlopen(server.url + "api/map").read())
            rate: float = drawn["publish_rates"].get("ticker", 0.0)
            return rate

        # The broker's statistics come every 5 s: the first sample of the ticker can be partial.
        wait_for(lambda: 5.0 <= ticker_rate() <= 12.0, timeout=30, what="ticker at about 10/s")
        page.goto(server.url)
        about_ten = re.compile(r"^([5-9]|1[0-2])\.\d/s$")  # 5.0/s to 12.9/s
        rate = page.locator('#map g.pub[data-service="ticker"] .rate')
        expect(rate).to_have_text(about_ten, timeout=15_000)  # the page refreshes every 5 s
    finally:
        stop.set()
        ticking.join(10)
        ticker.disconnect()
        page.close()
        server.shutdown()


def test_replaying_an_ordered_subscribers_dead_letters_sends_them_to_its_partitions(
    shop: Shop, console_url: str, browser: Browser
) -> None:
    """ledger has no queue and no retry exchange of its own: its dead letters go back through
    its hash exchange, each to the partition of its object, and its handler sees them."""
    server = start(console_url)
    page = browser.new_page()
    try:
        log_in(page, server)
        page.goto(server.url + "dead-letters/ledger")
        group = page.locator("section[data-subscriber=ledger] .group")
        expect(group).to_have_count(1)
        expect(group.locator(".count")).to_have_text(str(len(LEDGER_FAILURES)))
        shop.ledger_failing = False
        with shop.lock:
            before = len(shop.booked)
        page.once("dialog", lambda dialog: dialog.accept())
        group.locator("button", has_text=f"Replay {len(LEDGER_FAILURES)}").click()
        expect(page.locator(".action.done")).to_contain_text(
            f"replayed {len(LEDGER_FAILURES)} of {len(LEDGER_FAILURES)} dead letters of ledger; "
            "0 left"
        )
        wait_for(lambda: len(shop.booked) >= before + len(LEDGER_FAILURES), what="ledger again")
        with shop.lock:
            assert sorted(shop.booked[before:]) == sorted(LEDGER_FAILURES)
        assert queue_depth(console_url, "ledger-dl") == 0
    finally:
        page.close()
        server.shutdown()
