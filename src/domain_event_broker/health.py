"""Health probes for Kubernetes: is this subscriber process alive, and is it consuming?

>>> from domain_event_broker.health import HealthProbe
>>> probe = HealthProbe(subscriber).install()       # doctest: +SKIP
>>> probe.serve(8080)  # GET /livez, /readyz, /healthz  # doctest: +SKIP
>>> subscriber.start_consuming()                    # doctest: +SKIP

What it reports (``GET /healthz``, JSON, or :meth:`HealthProbe.report`):

- ``connected``: every watched component has an open connection to RabbitMQ;
- ``consuming``: every watched component's consumers receive events (false
  before ``start_consuming()``, while reconnecting and while stopping);
- ``last_handled_at``: when a handler last finished (seconds since the epoch,
  whatever the outcome), ``null`` before the first;
- ``running``: handlers running now; ``stuck``: those running longer than
  ``stuck_after`` seconds (default :data:`STUCK_AFTER`, 5 minutes), tracked by a
  handler middleware.

Semantics:

- **liveness** (``/livez``): 200 unless a handler is stuck. A stuck handler
  holds its events unacked and its worker forever; restarting the process
  returns those events to the queue. A lost connection does *not* fail
  liveness: the subscriber reconnects by itself, and restarting every pod
  during a broker outage would not help.
- **readiness** (``/readyz``): 200 when connected, consuming and not stuck. A
  subscriber is behind no Service, but readiness drives rolling updates (a new
  pod counts once it consumes) and shows in ``kubectl get pods``.
- A quiet queue is normal: the time of the last handled event is reported,
  never judged.

The outbox relay is watched the same way (``HealthProbe(relay)``, or
``--health-port`` on ``relay_domain_events`` and ``domain-events-relay``):
``connected`` to RabbitMQ, ``consuming`` while it relays (false while the
broker or the database is unreachable), ``last_handled_at`` when a batch was
last published and committed, and a batch running longer than
``stuck_after`` is stuck.

Other long-running parts can be watched too: pass any object with
``connected``, ``consuming`` and ``last_handled_at`` attributes (and
optionally ``working_since``, the ``time.monotonic()`` start of the work in
flight, and ``health_name``), or wrap each unit of work in
``with probe.working("name"):`` so that a hung one counts as stuck.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from . import observability
from .observability import Handling

__all__ = ["STUCK_AFTER", "HealthProbe", "HealthReport", "Watched"]

#: Seconds a handler may run before the process counts as stuck (liveness fails).
STUCK_AFTER = 300.0


class Watched(Protocol):
    """What a probe reads from a component (a Subscriber, the outbox relay).

    A component may also have ``working_since`` (``time.monotonic()`` when its
    work in flight started, or ``None``) and ``health_name``; such work running
    past ``stuck_after`` is stuck.
    """

    @property
    def connected(self) -> bool: ...

    @property
    def consuming(self) -> bool: ...

    @property
    def last_handled_at(self) -> float | None: ...


@dataclass(frozen=True)
class Running:
    """A handler (or other unit of work) running now."""

    what: str
    event_id: str | None
    seconds: float


@dataclass(frozen=True)
class HealthReport:
    connected: bool
    consuming: bool
    last_handled_at: float | None
    running: list[Running] = field(default_factory=list)
    stuck: list[Running] = field(default_factory=list)
    stuck_after: float = STUCK_AFTER

    @property
    def live(self) -> bool:
        return not self.stuck

    @property
    def ready(self) -> bool:
        return self.connected and self.consuming and self.live

    def as_dict(self) -> dict[str, Any]:
        report = asdict(self)
        report["live"] = self.live
        report["ready"] = self.ready
        report["last_handled"] = (
            None
            if self.last_handled_at is None
            else datetime.fromtimestamp(self.last_handled_at, timezone.utc).isoformat()
        )
        return report


class HealthProbe:
    """Tracks running handlers and reads the state of ``components``."""

    def __init__(self, *components: Watched, stuck_after: float = STUCK_AFTER) -> None:
        if stuck_after <= 0:
            raise ValueError(f"stuck_after must be positive, got {stuck_after}")
        self.components = components
        self.stuck_after = stuck_after
        self._running: dict[int, tuple[str, str | None, float]] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._removers: list[Callable[[], None]] = []

    # Tracking -----------------------------------------------------------------------
    def install(self) -> HealthProbe:
        """Track every handler call in this process (sync and asyncio); returns the probe."""
        if not self._removers:
            self._removers = [
                observability.add_middleware(self._middleware),
                observability.add_middleware(self._async_middleware),
            ]
        return self

    def uninstall(self) -> None:
        for remove in self._removers:
            remove()
        self._removers = []

    @contextlib.contextmanager
    def working(self, what: str, event_id: str | None = None) -> Iterator[None]:
        """Count the block as running work; running past ``stuck_after`` is stuck."""
        with self._lock:
            token = next(self._tokens)
            self._running[token] = (what, event_id, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._running[token]

    def _middleware(self, handling: Handling, call_next: Callable[[], object]) -> object:
        # working() inlined: this runs for every event.
        running, lock = self._running, self._lock
        with lock:
            token = next(self._tokens)
            running[token] = (handling.subscriber, handling.event.uuid_string, time.monotonic())
        try:
            return call_next()
        finally:
            with lock:
                del running[token]

    async def _async_middleware(
        self, handling: Handling, call_next: Callable[[], Awaitable[object]]
    ) -> object:
        with self.working(handling.subscriber, handling.event.uuid_string):
            return await call_next()

    # Reading ------------------------------------------------------------------------
    def report(self) -> HealthReport:
        now = time.monotonic()
        with self._lock:
            running = [
                Running(what, event_id, now - started)
                for what, event_id, started in self._running.values()
            ]
        for component in self.components:
            since = getattr(component, "working_since", None)
            if since is not None:
                name = getattr(component, "health_name", type(component).__name__)
                running.append(Running(name, None, now - since))
        handled = [c.last_handled_at for c in self.components if c.last_handled_at is not None]
        return HealthReport(
            connected=all(component.connected for component in self.components),
            consuming=all(component.consuming for component in self.components),
            last_handled_at=max(handled) if handled else None,
            running=running,
            stuck=[work for work in running if work.seconds > self.stuck_after],
            stuck_after=self.stuck_after,
        )

    # Serving ------------------------------------------------------------------------
    def serve(
        self, port: int = 8080, addr: str = "0.0.0.0", *, metrics: Any = None
    ) -> ThreadingHTTPServer:
        """Serve ``/livez``, ``/readyz`` and ``/healthz`` (and ``/metrics`` from a
        prometheus_client registry given as ``metrics``) from a daemon thread.

        Returns the server (``server.server_address``, ``server.shutdown()``).
        """
        server = ThreadingHTTPServer((addr, port), _handler_class(self, metrics))
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, name="domain-event-health", daemon=True
        ).start()
        return server


def _handler_class(probe: HealthProbe, metrics: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and metrics is not None:
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._reply(200, generate_latest(metrics), CONTENT_TYPE_LATEST)
                return
            if path not in ("/livez", "/readyz", "/healthz"):
                self._reply(404, b"not found\n", "text/plain")
                return
            report = probe.report()
            ok = {"/livez": report.live, "/readyz": report.ready, "/healthz": report.live}[path]
            body = json.dumps(report.as_dict(), indent=2).encode() + b"\n"
            self._reply(200 if ok else 503, body, "application/json")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes come every few seconds: no access log

    return Handler
