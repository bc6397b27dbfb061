"""Moved to :mod:`domain_event_broker.core.acks`; this import path keeps working.

It is the same module object, not a copy, so that whatever code patches or reads
here is what the core uses.
"""

import sys

from .core import acks as _moved
from .core.acks import (
    NO_ACKS,
    AckBook,
    Acks,
    Ticket,
)

__all__ = [
    "NO_ACKS",
    "AckBook",
    "Acks",
    "Ticket",
]

sys.modules[__name__] = _moved
