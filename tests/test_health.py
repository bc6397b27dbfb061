"""Health probe: what Kubernetes sees of a subscriber process, over HTTP, on the real broker."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from domain_event_broker.health import HealthProbe
from support import wait_for

MakeSubscriber = Callable[..., Subscriber]


def get(server: Any, path: str) -> tuple[int, dict[str, Any]]:
    host, port = server.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def running_subscriber(make_subscriber: MakeSubscriber) -> Iterator[Callable[[Subscriber], None]]:
    threads: list[tuple[Subscriber, threading.Thread]] = []

    def start(subscriber: Subscriber) -> None:
        thread = threading.Thread(target=subscriber.start_consuming, kwargs={"timeout": 60})
        thread.start()
        threads.append((subscriber, thread))

    yield start
    for subscriber, thread in threads:
        subscriber.stop_consuming()
        thread.join(30)


def test_ready_while_consuming_not_live_while_a_handler_is_stuck(
    broker_url: str,
    name: str,
    make_subscriber: MakeSubscriber,
    running_subscriber: Callable[[Subscriber], None],
) -> None:
    release = threading.Event()

    def handler(event: DomainEvent) -> None:
        if event.data.get("hang"):
            release.wait(20)

    subscriber = make_subscriber()
    subscriber.register(handler, name, [f"{name}.*"])
    probe = HealthProbe(subscriber, stuck_after=0.5).install()
    server = probe.serve(0, "127.0.0.1")
    try:
        status, report = get(server, "/readyz")
        assert status == 503  # connected, but not consuming yet
        assert report["connected"] is True and report["consuming"] is False
        assert report["last_handled_at"] is None
        assert get(server, "/livez")[0] == 200

        running_subscriber(subscriber)
        wait_for(lambda: get(server, "/readyz")[0] == 200)
        before = time.time()
        publish_domain_event(f"{name}.quick", {}, connection_settings=broker_url)
        wait_for(lambda: get(server, "/healthz")[1]["last_handled_at"] is not None)
        assert get(server, "/healthz")[1]["last_handled_at"] >= before

        hanging = publish_domain_event(
            f"{name}.slow", {"hang": True}, connection_settings=broker_url
        )
        wait_for(lambda: get(server, "/livez")[0] == 503)
        status, report = get(server, "/livez")
        assert [(s["what"], s["event_id"]) for s in report["stuck"]] == [
            (name, hanging.uuid_string)
        ]
        assert report["stuck"][0]["seconds"] > 0.5
        assert get(server, "/readyz")[0] == 503

        release.set()
        wait_for(lambda: get(server, "/livez")[0] == 200)
        assert get(server, "/readyz")[0] == 200
        subscriber.stop_consuming()
        wait_for(lambda: get(server, "/readyz")[0] == 503)
        assert get(server, "/livez")[0] == 200  # stopped is not stuck
    finally:
        release.set()
        probe.uninstall()
        server.shutdown()


def test_unknown_paths_are_404(make_subscriber: MakeSubscriber) -> None:
    probe = HealthProbe(make_subscriber())
    server = probe.serve(0, "127.0.0.1")
    try:
        host, port = server.server_address[:2]
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"http://{host}:{port}/nope", timeout=5)
        assert raised.value.code == 404
    finally:
        server.shutdown()


def test_serves_prometheus_metrics_beside_the_probes(make_subscriber: MakeSubscriber) -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("app_things", "things", registry=registry).inc(3)
    server = HealthProbe(make_subscriber()).serve(0, "127.0.0.1", metrics=registry)
    try:
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            assert "app_things_total 3.0" in reply.read().decode()
    finally:
        server.shutdown()


def test_the_operated_subscriber_example_serves_probes_metrics_and_traces(
    broker_url: str, name: str
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from support import delete_queues

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    example = Path(__file__).parent.parent / "examples" / "operated_subscriber.py"
    process = subprocess.Popen(
        [sys.executable, str(example)],
        env={
            **os.environ,
            "DOMAIN_EVENT_BROKER": broker_url,
            "SUBSCRIBER_NAME": name,
            "PROBE_PORT": str(port),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as error:
                return error.code
            except OSError:
                return 0

        def metrics() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return str(reply.read().decode())

        wait_for(lambda: status("/readyz") == 200, timeout=30)
        assert status("/livez") == 200
        event = publish_domain_event(
            "user.registered", {"user_id": 7}, connection_settings=broker_url
        )
        handled = (
            f'domain_events_handled_total{{routing_key="user.registered",subscriber="{name}"}} 1.0'
        )
        wait_for(lambda: handled in metrics())
        assert f'domain_event_queue_consumers{{subscriber="{name}"}} 1.0' in metrics()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "synced user 7" in err
        assert f"process {name}" in out and event.uuid_string in out  # the span, on stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        delete_queues(broker_url, name, f"{name}-dl")
