"""``manage.py relay_domain_events --health-port --metrics-port``: a real relay process on
PostgreSQL and the real broker, as Kubernetes and Prometheus see it."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry

from django_tests.project import manage, project_env
from domain_event_broker import prometheus
from domain_event_broker.django import publish_on_commit
from domain_event_broker.django.models import OutboxEvent
from domain_event_broker.django.outbox import DjangoOutboxStore
from support import free_port, http_get, queue_depth, wait_for


def test_relay_command_serves_probes_and_metrics_on_one_port(
    broker_url: str, event_queue: str
) -> None:
    port = free_port()
    process = subprocess.Popen(
        manage(
            "relay_domain_events",
            "--poll-interval",
            "0.2",
            "--health-port",
            str(port),
            "--metrics-port",
            str(port),
        ),
        env=project_env(broker_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, what="ready")
        with transaction.atomic():
            for n in range(2):
                publish_on_commit(f"{event_queue}.order.placed", {"n": n}, outbox=True)
        wait_for(lambda: queue_depth(broker_url, event_queue) == 2, what="relayed")
        wait_for(
            lambda: json.loads(http_get(port, "/healthz")[1])["last_handled_at"] is not None,
            what="batch time",
        )
        status, metrics = http_get(port, "/metrics")
        assert status == 200
        assert "domain_event_outbox_pending " in metrics
        assert f'domain_events_published_total{{routing_key="{event_queue}.order.placed"}} 2.0' in (
            metrics
        )
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "relayed 2 events" in out


def test_outbox_gauges_read_the_django_store() -> None:
    registry = CollectorRegistry()
    prometheus.watch_outbox_store(DjangoOutboxStore(), registry=registry, min_interval=0)
    assert registry.get_sample_value("domain_event_outbox_pending") == 0
    with transaction.atomic():
        for n in range(3):
            publish_on_commit("shop.order.placed", {"n": n}, outbox=True)
    first = OutboxEvent.objects.order_by("id").first()
    assert first is not None
    OutboxEvent.objects.filter(id=first.id).update(created_at=timezone.now() - timedelta(minutes=5))
    assert registry.get_sample_value("domain_event_outbox_pending") == 3
    age = registry.get_sample_value("domain_event_outbox_oldest_pending_seconds")
    assert age is not None and 300 <= age < 360
