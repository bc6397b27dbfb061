"""examples/fastapi_app.py runs: an endpoint publishes, the subscriber beside the app handles it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from domain_event_broker.replay import list_dead_letters
from domain_event_broker.topology import RETRIES_HEADER
from support import queue_depth

from .helpers import delete_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import fastapi_app


@pytest.fixture
def app(broker_url: str, name: str) -> Iterator[FastAPI]:
    """The example app with a subscriber of this test's own; its queues deleted afterwards."""
    try:
        yield fastapi_app.create_app(broker_url, subscriber_name=name)
    finally:
        delete_topology(broker_url, name)


def test_the_endpoint_publishes_and_the_subscriber_beside_the_app_handles_it(
    broker_url: str, name: str, app: FastAPI
) -> None:
    with TestClient(app) as client:
        for email in ("ada@example.org", "alan@example.org"):
            response = client.post("/users", json={"email": email})
            assert response.status_code == 201
            assert response.json()["event_id"]
        deadline = time.monotonic() + 20
        while len(client.get("/mails").json()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(client.get("/mails").json()) == ["ada@example.org", "alan@example.org"]
    # the app shut down cleanly: nothing left unhandled in the subscriber's queue
    assert queue_depth(broker_url, name) == 0


def test_a_mail_that_cannot_go_out_is_retried_twice_then_dead_lettered(
    broker_url: str, name: str, app: FastAPI
) -> None:
    with TestClient(app) as client:
        response = client.post("/users", json={"email": "nope"})
        assert response.status_code == 201
        event_id = response.json()["event_id"]
        deadline = time.monotonic() + 20
        while queue_depth(broker_url, f"{name}-dl") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/mails").json() == []
    [letter] = list_dead_letters(name, broker_url)
    assert letter.event is not None and letter.event.uuid_string == event_id
    assert letter.headers[RETRIES_HEADER] == 2  # tried three times: once, then two retries
    assert queue_depth(broker_url, name) == 0
