"""Moved to :mod:`domain_event_broker.core.supervisor`; this import path keeps working.

It is the same module object, not a copy, so that whatever code patches or reads
here is what the core uses.
"""

import sys

from .core import supervisor as _moved
from .core.supervisor import RETRYING, OutageLog, Wording, reconnecting

__all__ = ["RETRYING", "OutageLog", "Wording", "reconnecting"]

sys.modules[__name__] = _moved
