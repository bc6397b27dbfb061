"""Moved to :mod:`domain_event_broker.core.confirms`; this import path keeps working.

It is the same module object, not a copy, so that whatever code patches or reads
here is what the core uses.
"""

import sys

from .core import confirms as _moved
from .core.confirms import (
    NACK_GRACE,
    ConfirmBook,
    Pending,
)

__all__ = [
    "NACK_GRACE",
    "ConfirmBook",
    "Pending",
]

sys.modules[__name__] = _moved
