"""examples/fastapi_app.py runs: an endpoint publishes, the subscriber beside the app handles it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from support import queue_depth

from .helpers import delete_topology

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import fastapi_app


def test_the_endpoint_publishes_and_the_subscriber_beside_the_app_handles_it(
    broker_url: str, name: str
) -> None:
    app = fastapi_app.create_app(broker_url, subscriber_name=name)
    try:
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
    finally:
        delete_topology(broker_url, name)
