"""Prometheus: counters, histograms and queue gauges as a scrape sees them, on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from domain_event_broker import DomainEvent, Retry, Subscriber, prometheus, publish_domain_event
from domain_event_broker.observability import Metrics, add_listener
from support import consume_until, free_port, queue_depth

MakeSubscriber = Callable[..., Subscriber]


def test_counters_histograms_and_queue_gauges(
    broker_url: str, name: str, make_subscriber: MakeSubscriber
) -> None:
    registry = CollectorRegistry()
    prometheus.instrument(registry)
    dropping = f"{name}-nodl"
    try:
        prometheus.watch_subscribers(
            [name, dropping], broker_url, registry=registry, min_interval=0
        )

        def handler(event: DomainEvent) -> None:
            if event.data["kind"] == "flaky" and event.retries == 0:
                raise Retry(0.1)
            if event.data["kind"] == "broken":
                raise RuntimeError("bug")

        subscriber = make_subscriber()
        subscriber.register(handler, name, [f"{name}.#"], dead_letter=True, max_retries=2)
        subscriber.register(handler, dropping, [f"{name}.broken"])
        for kind in ("fine", "flaky", "broken"):
            publish_domain_event(f"{name}.{kind}", {"kind": kind}, connection_settings=broker_url)

        def value(metric: str, **labels: str) -> float | None:
            return registry.get_sample_value(metric, labels)

        assert value("domain_event_queue_depth", subscriber=name) == 3
        assert value("domain_event_queue_depth", subscriber=dropping) == 1
        assert value("domain_event_queue_consumers", subscriber=name) == 0
        consume_until(
            subscriber,
            lambda: (
                value("domain_events_handled_total", subscriber=name, routing_key=f"{name}.flaky")
                == 1
                and value(
                    "domain_events_dropped_total", subscriber=dropping, routing_key=f"{name}.broken"
                )
                == 1
                and queue_depth(broker_url, f"{name}-dl") == 1
            ),
            settle=0.2,
        )
        assert value("domain_events_published_total", routing_key=f"{name}.fine") == 1
        assert (
            value("domain_events_handled_total", subscriber=name, routing_key=f"{name}.fine") == 1
        )
        assert (
            value("domain_events_retried_total", subscriber=name, routing_key=f"{name}.flaky") == 1
        )
        assert (
            value(
                "domain_events_dead_lettered_total", subscriber=name, routing_key=f"{name}.broken"
            )
            == 1
        )
        # fine, flaky twice, broken; and broken once for the subscriber without dead letters
        assert value("domain_event_handler_duration_seconds_count", subscriber=name) == 4
        assert value("domain_event_handler_duration_seconds_count", subscriber=dropping) == 1
        assert value("domain_event_publish_confirm_seconds_count") == 3
        confirm_seconds = value("domain_event_publish_confirm_seconds_sum")
        assert confirm_seconds is not None and 0 < confirm_seconds < 5
        assert value("domain_event_queue_depth", subscriber=name) == 0
        assert value("domain_event_dead_letters", subscriber=name) == 1
        assert value("domain_event_dead_letters", subscriber=dropping) is None  # has none
    finally:
        prometheus.uninstrument(registry)


def test_outbox_gauges_call_the_functions_they_are_given() -> None:
    registry = CollectorRegistry()
    rows = [3]
    calls: list[str] = []

    def pending() -> int:
        calls.append("pending")
        return rows[0]

    prometheus.watch_outbox(pending, lambda: 12.5, registry=registry, min_interval=0)
    assert calls == []  # not called before the first scrape (the database may not be up yet)
    assert registry.get_sample_value("domain_event_outbox_pending") == 3
    assert registry.get_sample_value("domain_event_outbox_oldest_pending_seconds") == 12.5
    rows[0] = 0
    assert registry.get_sample_value("domain_event_outbox_pending") == 0


def test_a_routing_key_with_a_quote_and_a_newline_injects_no_metric_line(
    broker_url: str, name: str
) -> None:
    hostile = f'{name}.a"b\nfake_metric{{x="1"}} 1'
    metrics = Metrics()
    registry = CollectorRegistry()
    remove = add_listener(metrics)
    prometheus.instrument(registry)
    try:
        publish_domain_event(hostile, {}, connection_settings=broker_url)
        exports = (metrics.prometheus_text(), prometheus_text(registry))
    finally:
        remove()
        prometheus.uninstrument(registry)
    for exported in exports:
        families = list(text_string_to_metric_families(exported))
        assert "fake_metric" not in {family.name for family in families}
        samples = [sample for family in families for sample in family.samples]
        published = [
            s
            for s in samples
            if s.labels.get("routing_key") == hostile and s.name.endswith("_total")
        ]
        assert len(published) == 1 and published[0].value == 1


def prometheus_text(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_two_gunicorn_workers_each_publishing_n_give_2n_on_metrics(
    broker_url: str, name: str, tmp_path: Path
) -> None:
    count = 25
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            f"""
            from domain_event_broker import prometheus, publish_domain_event

            prometheus.instrument()
            for n in range({count}):
                publish_domain_event(
                    {name + ".made"!r}, {{"n": n}}, connection_settings={broker_url!r}
                )
            app = prometheus.make_wsgi_app()
            """
        )
    )
    (tmp_path / "gunicorn.conf.py").write_text(
        "from domain_event_broker.prometheus import gunicorn_child_exit as child_exit\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(tmp_path),
            "--config",
            str(tmp_path / "gunicorn.conf.py"),
            "app:app",
        ],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        published = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                    text = reply.read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            published = sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "domain_events_published_total"
                and sample.labels.get("routing_key") == f"{name}.made"
            )
            if published >= 2 * count:
                break
            time.sleep(0.2)
        assert published == 2 * count
        writers = {path.name.rsplit("_", 1)[1] for path in multiproc.glob("counter_*.db")}
        assert len(writers) == 2  # two worker processes wrote counters
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output.decode()
