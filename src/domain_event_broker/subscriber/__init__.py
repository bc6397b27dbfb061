"""Receiving domain events: delivery -> handler -> ack, retry or dead-letter.

The thread that calls :meth:`Subscriber.start_consuming` drives the
connection (the I/O thread). Handlers run on worker threads, so heartbeats keep
flowing while a handler is slow. Workers hand their outcome back to the I/O
thread, which alone touches the channels:

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
