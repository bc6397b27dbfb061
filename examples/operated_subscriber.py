"""A subscriber process ready for Kubernetes: probes, Prometheus metrics and traces on one port.

    pip install 'domain-event-broker[prometheus,otel]' opentelemetry-sdk
    python examples/operated_subscriber.py       # then: curl localhost:8080/readyz

GET /livez, /readyz, /healthz and /metrics on $PROBE_PORT (default 8080). SIGTERM stops it
gracefully. Spans go to stdout when the OpenTelemetry SDK is installed.
"""

import logging
import os

from domain_event_broker import DomainEvent, Subscriber, otel, prometheus
from domain_event_broker.health import HealthProbe


def sync_user_data(event: DomainEvent) -> None:
    logging.info("synced user %s", event.data.get("user_id"))


def trace_to_stdout() -> None:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    otel.instrument()


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
logging.getLogger("pika").setLevel(logging.WARNING)
url = os.environ.get("DOMAIN_EVENT_BROKER", "")
name = os.environ.get("SUBSCRIBER_NAME", "sync_data")

trace_to_stdout()
prometheus.instrument()  # counters and histograms
prometheus.watch_subscribers([name], url)  # queue depth, consumers, dead letters

subscriber = Subscriber(url)
subscriber.register(sync_user_data, name, ["user.*"], dead_letter=True, max_retries=3)
probe = HealthProbe(subscriber).install()
probe.serve(int(os.environ.get("PROBE_PORT", "8080")), metrics=prometheus.metrics_registry())
subscriber.start_consuming()
