"""Back off while something keeps failing, and keep the failure visible without flooding the log.

One small class for every loop that retries against the broker or a database
(the outbox relay today; the publisher and the subscriber can adopt it):

- the first failure is a WARNING;
- while failures go on, a WARNING at most once per ``interval`` (a minute by
  default) that says how many failures happened since the previous one;
- the first success after failures is an INFO with the total count and the
  outage's length;
- between attempts, a capped exponential backoff (:class:`~.connection.Backoff`).

The clock and the backoff are injected, so that the rules are tested without
waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .connection import Backoff

#: Seconds between two WARNINGs while the same outage goes on.
WARNING_INTERVAL = 60.0


class OutageLog:
    """Decides how long to wait after a failure and when to log it.

    >>> outage = OutageLog(logging.getLogger("relay"), "the outbox relay")
    >>> delay = outage.failed(ConnectionError("refused"))  # WARNING, returns the pause
    >>> outage.succeeded()  # INFO: working again after 1 failure
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        backoff: Backoff | None = None,
        interval: float = WARNING_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.backoff = backoff if backoff is not None else Backoff(initial=0.5, maximum=30.0)
        self.interval = interval
        self.clock = clock
        #: Failures since the last success.
        self.failures = 0
        self._since_warning = 0
        self._started: float | None = None
        self._warned_at: float | None = None

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self.failures > 0

    def failed(self, error: BaseException, *, traceback: bool = False) -> float:
        """Count a failure; log it when due; return the seconds to wait before the next attempt.

        ``traceback``: add the error's traceback to the WARNINGs (for errors
        that are not the usual "broker unreachable").
        """
        now = self.clock()
        delay = self.backoff.next_delay()
        self.failures += 1
        self._since_warning += 1
        if self._started is None:
            self._started = now
            self._warn(
                "%s failed: %s; retrying with backoff (next in %.1f s)",
                (self.what, error, delay),
                now,
                error if traceback else None,
            )
        elif self._warned_at is not None and now - self._warned_at >= self.interval:
            self._warn(
                "%s still failing after %.0f s: %d failed attempts since the last warning; "
                "last error: %s (next in %.1f s)",
                (self.what, now - self._started, self._since_warning, error, delay),
                now,
                error if traceback else None,
            )
        else:
            self.logger.debug("%s failed again: %s (next in %.1f s)", self.what, error, delay)
        return delay

    def succeeded(self) -> None:
        """Count a success: an INFO when it ends an outage; the backoff starts afresh."""
        if self.failures:
            started = self._started if self._started is not None else self.clock()
            self.logger.info(
                "%s working again after %d failed attempts in %.0f s",
                self.what,
                self.failures,
                self.clock() - started,
            )
        self.failures = 0
        self._since_warning = 0
        self._started = None
        self._warned_at = None
        self.backoff.reset()

    def _warn(
        self,
        message: str,
        args: tuple[object, ...],
        now: float,
        error: BaseException | None,
    ) -> None:
        exc_info = (type(error), error, error.__traceback__) if error is not None else None
        self.logger.warning(message, *args, exc_info=exc_info)
        self._warned_at = now
        self._since_warning = 0
