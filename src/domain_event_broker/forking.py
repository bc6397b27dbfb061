"""A value that belongs to the process that made it, such as a connection.

A forked child inherits its parent's sockets but none of its threads, and a
lock some parent thread held at the fork (say, while connecting) stays held
in the child for ever. A :class:`ProcessSlot` starts afresh in the child, with
a fresh lock, so the child makes its own value and never waits on the parent.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_slots: weakref.WeakSet[ProcessSlot[object]] = weakref.WeakSet()


class ProcessSlot(Generic[T]):
    """Holds one ``T`` for the current process; see the module docstring."""

    def __init__(self, getpid: Callable[[], int] = os.getpid) -> None:
        self._getpid = getpid
        self._pid = getpid()
        self.lock = threading.Lock()
        self.value: T | None = None
        _slots.add(self)  # type: ignore[arg-type]

    def get(self, usable: Callable[[T], bool], create: Callable[[], T]) -> T:
        """The value, made by ``create`` when there is none in this process or it is not usable."""
        value = self.value
        if value is not None and self._pid == self._getpid() and usable(value):
            return value
        if self._pid != self._getpid():
            self.forget()  # a fork the hook did not see: never wait on the parent's lock
        with self.lock:
            value = self.value
            if value is None or not usable(value):
                value = self.value = create()
            return value

    def take(self) -> T | None:
        """Remove and return this process's value (None when it is the parent's or none)."""
        if self._pid != self._getpid():
            self.forget()
            return None
        with self.lock:
            value, self.value = self.value, None
        return value

    def forget(self) -> None:
        """Start afresh in a forked child: drop the parent's value and lock without using them."""
        self._pid = self._getpid()
        self.lock = threading.Lock()
        self.value = None


def _forget_all_after_fork() -> None:
    for slot in list(_slots):
        slot.forget()


os.register_at_fork(after_in_child=_forget_all_after_fork)
