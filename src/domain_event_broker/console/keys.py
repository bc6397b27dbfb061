"""The routing keys on recent events: what the broker cannot say, the console watches.

RabbitMQ knows bindings, not which routing keys publishers use. While the
console runs, a temporary queue of its own (exclusive, bound with ``#``, at most
:data:`WATCH_QUEUE_LENGTH` events kept, consumed with auto-ack) sees a copy of
every event and counts its routing key; the map shows the keys seen, which
subscribers each reaches, and those that reach none. The queue goes with the
console's connection: it never holds up or takes an event from anyone else.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..connection import connect_blocking
from ..core.event_map import KeyTally
from ..settings import BrokerSettings

log = logging.getLogger(__name__)

#: Events the watching queue keeps at most while the console reads (the oldest go first).
WATCH_QUEUE_LENGTH = 1000
#: Seconds between attempts while the broker cannot be reached.
WATCH_RETRY_PAUSE = 5.0


class RoutingKeyWatcher:
    """Counts the routing keys of the events on ``exchange``, on a thread of its own."""

    def __init__(self, url: BrokerSettings, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.tally = KeyTally()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    def recent(self) -> list[tuple[str, int, float]]:
        with self._lock:
            return self.tally.recent(time.time())

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch()
            except Exception as error:  # the map goes on without keys; try again later
                log.warning("console: cannot watch routing keys (%s); again in 5 s", error)
                self._stopping.wait(WATCH_RETRY_PAUSE)

    def _watch(self) -> None:
        connection = connect_blocking(self.url, "console")
        try:
            channel = connection.channel()
            queue = channel.queue_declare(
                "", exclusive=True, auto_delete=True, arguments={"x-max-length": WATCH_QUEUE_LENGTH}
            ).method.queue
            channel.queue_bind(queue, self.exchange, "#")
            channel.basic_consume(queue, self._seen, auto_ack=True)
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            if connection.is_open:
                connection.close()

    def _seen(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        with self._lock:
            self.tally.add(str(method.routing_key), time.time())
