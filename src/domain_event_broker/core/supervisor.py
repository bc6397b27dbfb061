"""The reconnect state machine of every loop: when to try again, which node, what to log.

Every loop that keeps a connection to the broker (the sync and asyncio
publishers and subscribers) or retries work against it (the outbox relay)
reports to one :class:`Supervisor` what happened — connected, lost — and gets
back what to do: how long to pause, which node of a cluster to try next. The
driver does the I/O. The rules, written once:

- the pause after a loss is a capped exponential backoff with full jitter
  (:class:`Backoff`); it starts afresh only once a connection has lasted
  ``stable_after`` seconds, so that one lost right after opening (a declare the
  broker refuses, say) never reconnects in a tight loop;
- with several nodes, each loss moves on to the next;
- the outage is logged (:class:`OutageLog`) without flooding the log:

  - the first failure is a WARNING;
  - while failures go on, a WARNING at most once per ``interval`` (a minute by
    default) that says how many failures happened since the previous one;
  - the first success after failures says so with the total count and the
    outage's length: an INFO for retried work, a WARNING for a reconnect (whoever
    reads WARNINGs only must also learn that the outage ended).

The clock and the backoff are injected, so that the rules are tested without
waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .defaults import STABLE_CONNECTION, WARNING_INTERVAL


class Backoff:
    """Capped exponential backoff with full jitter, for reconnect loops.

    >>> backoff = Backoff(initial=0.1, maximum=3.0)
    >>> 0 <= backoff.next_delay() <= 0.1
    True
    """

    def __init__(self, initial: float = 0.1, maximum: float = 3.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        # Jitter keeps many clients that lost the same broker from reconnecting in lockstep.
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


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


class Supervisor:
    """Decides, for one connection loop, the pause after each loss and the node to try next.

    >>> supervisor = Supervisor(OutageLog(logging.getLogger("demo"), "RabbitMQ"), nodes=2)
    >>> supervisor.node
    0
    >>> pause = supervisor.lost(ConnectionError("refused"))  # WARNING; the pause to wait
    >>> supervisor.node
    1
    >>> supervisor.connected()  # recovery logged; the backoff restarts once it lasts

    ``stable_after``: seconds a connection must last before a loss of it starts
    the backoff afresh (0: every success starts it afresh).
    """

    def __init__(
        self,
        outage: OutageLog,
        *,
        nodes: int = 1,
        stable_after: float = STABLE_CONNECTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a broker has at least one node, got {nodes}")
        self.outage = outage
        self.nodes = nodes
        self.stable_after = stable_after
        self.clock = clock
        #: Index of the node to connect to next.
        self.node = 0
        self._connected_at: float | None = None

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self.outage.failing

    def connected(self) -> None:
        """A connection (or a unit of work) succeeded: log the end of an outage."""
        self._connected_at = self.clock()
        self.outage.succeeded(restart_backoff=self.stable_after <= 0)

    def lost(self, error: BaseException, *, traceback: bool = False) -> float:
        """A connection was lost or could not be opened: the seconds to pause first."""
        if (
            self._connected_at is not None
            and self.clock() - self._connected_at >= self.stable_after
        ):
            self.outage.backoff.reset()
        self._connected_at = None
        self.next_node()
        return self.outage.failed(error, traceback=traceback)

    def next_node(self) -> None:
        """Move on to the cluster's next node without counting an outage (a first
        connect tries each node once before it reports the broker unreachable)."""
        self.node = (self.node + 1) % self.nodes

    def pause(self) -> float:
        """The next backoff pause, for a retry that is no outage (a channel reopened)."""
        return self.outage.backoff.next_delay()


def connection_supervisor(
    log: logging.Logger,
    masked_url: str,
    *,
    client: str = "",
    then: str = "",
    error_text: bool = True,
    nodes: int = 1,
    stable_after: float = STABLE_CONNECTION,
) -> Supervisor:
    """The supervisor of a connection to RabbitMQ at ``masked_url`` (password masked).

    Every driver's connection backs off alike (:class:`Backoff`'s defaults) and
    words its outage alike (:func:`reconnecting`, whose arguments these are).
    """
    outage = OutageLog(
        log,
        f"RabbitMQ at {masked_url}",
        backoff=Backoff(),
        wording=reconnecting(client, then, error_text=error_text),
    )
    return Supervisor(outage, nodes=nodes, stable_after=stable_after)
