"""Receiving domain events: delivery -> handler -> ack, retry or dead-letter.

The worker threads take turns at the connection's I/O: one at a time reads the
socket and settles; when an event arrives it passes that turn to an idle worker
and runs the handler itself. A worker is always left reading, so heartbeats
keep flowing while a handler is slow. Outcomes go back to the worker with the
turn, which alone touches the channels (the thread that called
:meth:`Subscriber.start_consuming` connects, reconnects and drains):

- success: ack;
- :class:`Retry` below ``max_retries``: publish a delayed copy to the wait
  queue for that delay, wait for the broker's confirm, then ack;
- anything else (or too many retries, or a body that is not an event): publish
  a copy with failure headers to the dead-letter queue (when the subscriber has
  one), wait for the confirm, then ack; without a dead-letter queue the event is
  dropped and logged as an error.

When the connection is lost the subscriber reconnects with backoff, declares
its topology again and resumes; outcomes of deliveries from the lost channel
are discarded, since RabbitMQ redelivers those events. ``core.py`` says where
each part lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..copies import copy_properties
from ..core.defaults import PREFETCH_COUNT, PUBLISH_TIMEOUT, SHUTDOWN_GRACE_PERIOD, WORKERS
from ..core.outcome import retries_of
from ..handlers import Handler
from .core import Subscriber


def delivery_retries(headers: Mapping[str, Any] | None, subscriber_name: str) -> int:
    """How often a message was delivered to ``subscriber_name`` before (for old imports)."""
    return retries_of(headers, subscriber_name)


__all__ = [
    "PREFETCH_COUNT",
    "PUBLISH_TIMEOUT",
    "SHUTDOWN_GRACE_PERIOD",
    "WORKERS",
    "Handler",
    "Subscriber",
    "copy_properties",
    "delivery_retries",
]
