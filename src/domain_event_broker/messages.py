"""Moved to :mod:`domain_event_broker.core.messages`; this import path keeps working.

It is the same module object, not a copy, so that whatever code patches or reads
here is what the core uses.
"""

import sys

from .core import messages as _moved
from .core.messages import (
    OutgoingMessage,
    PublishOutcome,
)

__all__ = [
    "OutgoingMessage",
    "PublishOutcome",
]

sys.modules[__name__] = _moved
