"""Moved to :mod:`domain_event_broker.core.outcome`; this import path keeps working.

It is the same module object, not a copy, so that whatever code patches or reads
here is what the core uses.
"""

import sys

from .core import outcome as _moved
from .core.outcome import (
    HANDLED,
    MAX_REASON_BYTES,
    REQUEUE,
    Action,
    Outcome,
    Policy,
    bounded,
    decide,
    failure,
    failure_headers,
    fate,
    header_count,
    parse_event,
    qualified_name,
    retries_of,
    retry_headers,
    safe_text,
    undecodable,
)

__all__ = [
    "HANDLED",
    "MAX_REASON_BYTES",
    "REQUEUE",
    "Action",
    "Outcome",
    "Policy",
    "bounded",
    "decide",
    "failure",
    "failure_headers",
    "fate",
    "header_count",
    "parse_event",
    "qualified_name",
    "retries_of",
    "retry_headers",
    "safe_text",
    "undecodable",
]

sys.modules[__name__] = _moved
