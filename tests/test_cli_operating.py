"""The operator's side of ``domain-events``: status as JSON, a metrics endpoint (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from domain_event_broker import DomainEvent, Subscriber, publish_domain_event
from support import free_port
from test_cli import domain_events

MakeSubscriber = Callable[..., Subscriber]


def nothing(_event: DomainEvent) -> None:
    pass


def test_status_json_for_scripts(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber().register(nothing, name, [f"{name}.*"], dead_letter=True)
    for n in range(3):
        publish_domain_event(f"{name}.made", {"n": n}, connection_settings=broker_url)
    result = domain_events("--url", broker_url, "status", "--json", name)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"name": name, "waiting": 3, "consumers": 0, "dead_letters": 0}
    ]
    missing = domain_events("--url", broker_url, "status", "--json", name, f"{name}-missing")
    assert missing.returncode == 1
    rows = json.loads(missing.stdout)
    assert rows[1] == {
        "name": f"{name}-missing",
        "waiting": None,
        "consumers": None,
        "dead_letters": None,
    }


def test_metrics_command_serves_queue_gauges(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    make_subscriber().register(nothing, name, [f"{name}.*"], dead_letter=True)
    for n in range(2):
        publish_domain_event(f"{name}.made", {"n": n}, connection_settings=broker_url)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "domain_event_broker.cli",
            "--url",
            broker_url,
            "metrics",
            name,
            "--port",
            str(port),
            "--addr",
            "127.0.0.1",
            "--timeout",
            "60",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert f"http://127.0.0.1:{port}/metrics" in server.stderr.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    text = reply.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        gauges = {
            (sample.name, sample.labels.get("subscriber")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert gauges[("domain_event_queue_depth", name)] == 2
        assert gauges[("domain_event_dead_letters", name)] == 0
        assert "password" not in text and "guest:guest" not in text
    finally:
        server.terminate()
        server.communicate(timeout=30)
