"""Publishing domain events with publisher confirms over one long-lived connection (pika).

The parts, each in a module of its own:

- :mod:`.core`: the public :class:`Publisher`;
- :mod:`.shared`: the process-wide publishers behind :func:`publish_domain_event`;
- :mod:`.messages`: a message's bytes and properties, built on the caller's thread;
- :mod:`.confirming`: the hand-off to the I/O thread and the wait for confirms;
- :mod:`.link`: the connection and channel on the I/O thread, reconnected as the
  core's supervisor says;
- :mod:`.io_thread`: the I/O thread itself.

Every module logs as ``domain_event_broker.publisher``.
"""

from ..core.confirms import NACK_GRACE
from ..core.defaults import PUBLISH_TIMEOUT
from .core import Publisher
from .io_thread import IOThread
from .io_thread import IOThread as _IOThread  # its name before the split, kept for old imports
from .shared import (
    EventSink,
    close_shared_publishers,
    current_event_sink,
    publish_domain_event,
    redirect_events,
    shared_publisher,
)

__all__ = [
    "NACK_GRACE",
    "PUBLISH_TIMEOUT",
    "EventSink",
    "IOThread",
    "Publisher",
    "_IOThread",
    "close_shared_publishers",
    "current_event_sink",
    "publish_domain_event",
    "redirect_events",
    "shared_publisher",
]
