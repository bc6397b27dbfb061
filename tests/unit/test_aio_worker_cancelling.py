"""A CancelledError from a handler is the handler's failure, unless the subscriber is stopping.

On Python 3.10 there is no ``Task.cancelling()``: the asyncio subscriber must not take
every CancelledError for its own stop (the worker task would end, and the subscriber
would stay connected while handling nothing).
"""

from __future__ import annotations

import asyncio

from domain_event_broker.aio.subscriber import handling


class TaskOfPython310:
    """A task as Python 3.10 has it: no ``cancelling()``."""


def test_without_task_cancelling_a_cancelled_error_is_the_handlers_unless_stopping() -> None:
    task = TaskOfPython310()
    assert not handling.being_cancelled(task)  # type: ignore[arg-type]
    handling.stopping(task)  # type: ignore[arg-type]
    assert handling.being_cancelled(task)  # type: ignore[arg-type]


def test_a_task_being_cancelled_is_cancelling() -> None:
    async def main() -> tuple[bool, bool]:
        blocker = asyncio.Event()

        async def work() -> None:
            await blocker.wait()

        task = asyncio.create_task(work())
        await asyncio.sleep(0)
        before = handling.being_cancelled(task)
        task.cancel()
        during = handling.being_cancelled(task)
        await asyncio.gather(task, return_exceptions=True)
        return before, during

    before, during = asyncio.run(main())
    assert before is False
    assert during is True
