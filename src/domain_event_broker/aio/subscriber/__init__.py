"""The asyncio subscriber (see :mod:`.core` for how a delivery travels through its parts)."""

from __future__ import annotations

from .copies import CONFIRM_TIMEOUT
from .core import AsyncSubscriber
from .session import Acks as _Acks
from .session import AsyncHandler, SessionFailed

__all__ = ["CONFIRM_TIMEOUT", "AsyncHandler", "AsyncSubscriber", "SessionFailed", "_Acks"]
