"""Calling a handler: through the middlewares, and to the end when it is ``async def``.

An ``async def`` handler returns a coroutine when called; acking the event
then would ack work that never ran. :class:`HandlerRunner` runs it to the end
on an event loop of its own thread (one per worker thread), inside the
middlewares, so they see the handler's real duration and exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from . import observability
from .core.topology import SubscriberTopology
from .events import DomainEvent

#: ``handler(event)``: a function, or an ``async def`` function, taking a DomainEvent.
Handler = Callable[[DomainEvent], object]


class RegisteredHandler(NamedTuple):
    """One handler a subscriber registered, as the contract commands describe it."""

    handler: Callable[[DomainEvent], object]
    topology: SubscriberTopology
    max_retries: int


class HandlerRunner:
    """Calls handlers on one thread; owns that thread's event loop for async handlers."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(
        self,
        handler: Handler,
        event: DomainEvent,
        subscriber: str,
        headers: Mapping[str, Any] | None = None,
    ) -> object:
        """Call ``handler(event)`` inside every middleware; await what it returns.

        ``subscriber`` and the delivery's ``headers`` are what a middleware sees
        of the call (:class:`observability.Handling`).
        """
        if not observability.has_middleware():  # the hot path: no wrapper to build
            return self._run_to_the_end(handler, event)
        return observability.call_handler(
            functools.partial(self._run_to_the_end, handler),
            observability.Handling(subscriber, event, headers or {}),
        )

    def _run_to_the_end(self, handler: Handler, event: DomainEvent) -> object:
        result = handler(event)
        if result is None:  # most handlers: no need to ask whether it is awaitable
            return None
        return self._await(result) if inspect.isawaitable(result) else result

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.close()

    def _await(self, awaitable: Awaitable[Any]) -> object:
        if _loop_running_here():
            # Called from inside a running loop (an async test calling the
            # in-memory broker): that loop cannot be entered again, so the
            # handler runs on a loop of a thread of its own.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, _to_coroutine(awaitable)).result()
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(_to_coroutine(awaitable))


async def _to_coroutine(awaitable: Awaitable[Any]) -> object:
    return await awaitable


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
