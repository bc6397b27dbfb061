"""Back off while something keeps failing, and keep the failure visible without flooding the log.

One small class for every loop that retries against the broker or a database
(the outbox relay, the sync and asyncio publishers and subscribers):

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
from dataclasses import dataclass

from .connection import Backoff

#: Seconds between two WARNINGs while the same outage goes on.
WARNING_INTERVAL = 60.0


@dataclass(frozen=True)
class Wording:
    """The three lines of an outage, as ``str.format`` templates.

    Fields: ``what``, ``error`` (its text), ``kind`` (its type's name),
    ``delay`` (seconds to the next attempt), ``elapsed`` (seconds since the
    outage began), ``count`` (failures since the last WARNING), ``failures``
    (failures in all).
    """

    failed: str
    still_failing: str
    recovered: str
    #: DEBUG, for the failures between two WARNINGs.
    again: str = "{what} failed again: {kind}: {error} (next in {delay:.1f} s)"
    #: A reconnect ends an outage whose WARNING the operator saw: it is a WARNING
    #: too, or whoever reads WARNINGs only would never learn that it ended.
    recovered_level: int = logging.INFO


#: For a loop that retries some work (the outbox relay): ``what`` names the work.
RETRYING = Wording(
    failed="{what} failed: {error}; retrying with backoff (next in {delay:.1f} s)",
    still_failing=(
        "{what} still failing after {elapsed:.0f} s: {count} failed attempts since the last "
        "warning; last error: {error} (next in {delay:.1f} s)"
    ),
    recovered="{what} working again after {failures} failed attempts in {elapsed:.0f} s",
)


def reconnecting(client: str = "", then: str = "", *, error_text: bool = True) -> Wording:
    """For a connection to RabbitMQ: ``what`` is "RabbitMQ at <url with the password masked>".

    ``client`` names who lost it where one process runs several (asyncio);
    ``then`` says what happens on reconnect ("consuming orders again");
    ``error_text=False`` names the error's type only (aiormq's texts may quote
    the URL it was given, password and all).
    """
    then = then.replace("{", "{{").replace("}", "}}")  # names are data, not template
    lost = f"{client} lost" if client else "lost the connection to"
    reconnected = f"{client} reconnected to" if client else "reconnected to"
    error = "{kind}: {error}" if error_text else "{kind}"
    return Wording(
        failed=lost + " {what} (" + error + "); reconnecting with backoff",
        still_failing=(
            "still no connection to {what} after {elapsed:.0f} s: {count} failed attempts "
            "since the last warning; last error: " + error
        ),
        recovered=reconnected + " {what} after {elapsed:.1f} s" + (f"; {then}" if then else ""),
        again="still no connection to {what} (" + error + "; next attempt in {delay:.1f} s)",
        recovered_level=logging.WARNING,
    )


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
        wording: Wording = RETRYING,
        interval: float = WARNING_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.backoff = backoff if backoff is not None else Backoff(initial=0.5, maximum=30.0)
        self.wording = wording
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
            self._warn(self.wording.failed, error, delay, now, traceback)
        elif self._warned_at is not None and now - self._warned_at >= self.interval:
            self._warn(self.wording.still_failing, error, delay, now, traceback)
        elif self.logger.isEnabledFor(logging.DEBUG):
            text = self._text(self.wording.again, error, delay, now - self._started)
            self.logger.debug("%s", text)
        return delay

    def succeeded(self, *, restart_backoff: bool = True) -> None:
        """Count a success: an INFO when it ends an outage; the backoff starts afresh.

        ``restart_backoff=False``: log the recovery but keep the backoff, for a
        caller that restarts it only once the success has lasted.
        """
        if self.failures:
            started = self._started if self._started is not None else self.clock()
            text = self._text(self.wording.recovered, None, 0.0, self.clock() - started)
            self.logger.log(self.wording.recovered_level, "%s", text)
        self.failures = 0
        self._since_warning = 0
        self._started = None
        self._warned_at = None
        if restart_backoff:
            self.backoff.reset()

    def _warn(
        self, template: str, error: BaseException, delay: float, now: float, traceback: bool
    ) -> None:
        started = self._started if self._started is not None else now
        exc_info = (type(error), error, error.__traceback__) if traceback else None
        text = self._text(template, error, delay, now - started)
        self.logger.warning("%s", text, exc_info=exc_info)
        self._warned_at = now
        self._since_warning = 0

    def _text(
        self, template: str, error: BaseException | None, delay: float, elapsed: float
    ) -> str:
        return template.format(
            what=self.what,
            error=error,
            kind=type(error).__name__,
            delay=delay,
            elapsed=elapsed,
            count=self._since_warning,
            failures=self.failures,
        )
