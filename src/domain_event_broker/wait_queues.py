"""Moved to :mod:`domain_event_broker.core.wait_queues`; this import path keeps working.

It is the same module object, not a copy: code (and tests) that shorten
``wait_queues.IDLE_AFTER`` or ``CHECK_INTERVAL`` here change what the core reads.
"""

import sys

from .core import wait_queues as _moved
from .core.wait_queues import CHECK_INTERVAL, IDLE_AFTER, WaitQueueBook

__all__ = ["CHECK_INTERVAL", "IDLE_AFTER", "WaitQueueBook"]

sys.modules[__name__] = _moved
