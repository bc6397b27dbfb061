"""What the console shows and does, apart from HTTP: the map, dead letters, the outbox, jobs.

Every view's data comes from here as plain dicts (the JSON twins under ``/api/``
are these, and the pages are drawn from them). Bulk actions run on a thread of
their own, one at a time, and report their progress; reading dead letters waits
for a running action, so the two never take the same letters.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from ..core.event_map import event_map
from ..core.inventory import subscribers
from ..core.ordered_inventory import archive_of, ordered_subscribers
from ..core.topology import DEFAULT_EXCHANGE, dead_letter_queue_name
from ..inventory import exact_counts
from ..management import ManagementAPI, queue_rates, queue_record
from ..outbox.store import OutboxStatus, ParkedEvent
from ..settings import BrokerSettings
from .dead_letters import Progress, SubscriberLetters, act_on_group, read_letters
from .keys import RoutingKeyWatcher

log = logging.getLogger(__name__)

#: Finished actions the dead-letter page keeps showing.
KEPT_ACTIONS = 20
#: Finished actions /api/jobs still answers for.
KEPT_JOBS = 100
#: Letters of a group listed on the page (all are counted; the page links the rest).
LISTED_LETTERS = 50


class OutboxStore(Protocol):
    def status(self) -> OutboxStatus: ...
    def parked(self, limit: int) -> list[ParkedEvent]: ...
    def retry_parked(self, ids: list[int] | None) -> int: ...
    def discard_parked(self, ids: list[int] | None) -> int: ...


@dataclasses.dataclass
class Job:
    id: int
    what: str
    progress: Progress
    started: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "what": self.what, "started": self.started} | dataclasses.asdict(
            self.progress
        )


class Console:
    """The operator console's data and actions on one broker (and, maybe, one outbox)."""

    def __init__(
        self,
        url: BrokerSettings,
        management_url: str | None = None,
        outbox: OutboxStore | None = None,
        exchange: str = DEFAULT_EXCHANGE,
    ) -> None:
        self.url = url
        self.management = ManagementAPI(url, management_url)
        self.outbox = outbox
        self.exchange = exchange
        self._letters_lock = threading.Lock()
        self._job_ids = itertools.count(1)
        self.jobs: dict[int, Job] = {}
        self.finished: deque[Job] = deque(maxlen=KEPT_ACTIONS)
        self.watcher: RoutingKeyWatcher | None = None

    def watch_routing_keys(self) -> None:
        """Start counting the routing keys of the events on the exchange, for the map."""
        if self.watcher is None:
            self.watcher = RoutingKeyWatcher(self.url, self.exchange)
            self.watcher.start()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # The event map ----------------------------------------------------------------
    def event_map(self) -> dict[str, Any]:
        rows = self.management.queue_rows()
        # Counts of this moment (the API's are up to 5 s old); rates are the API's.
        queues = exact_counts(self.url, [queue_record(row) for row in rows])
        to_queues, to_exchanges = self.management.all_bindings()
        drawn = event_map(
            self.exchange,
            subscribers(queues, to_queues, self.exchange),
            self.management.connections(),
            self.management.consumers(),
            {row["name"]: queue_rates(row) for row in rows},
            self.watcher.recent() if self.watcher is not None else (),
            ordered_subscribers(queues, to_queues, to_exchanges, self.exchange),
            archive_of(self.exchange, queues, {r["name"]: r.get("arguments") or {} for r in rows}),
            self.management.publish_rates(),
        )
        return {
            "exchange": drawn.exchange,
            "publishers": list(drawn.publishers),
            "publish_rates": dict(drawn.publish_rates),
            "subscribers": [
                dataclasses.asdict(subscriber.summary)
                | {
                    "services": list(subscriber.services),
                    "rate_in": subscriber.rate_in,
                    "rate_out": subscriber.rate_out,
                    "partitions": [dataclasses.asdict(one) for one in subscriber.partitions],
                }
                for subscriber in drawn.subscribers
            ],
            "archive": None if drawn.archive is None else dataclasses.asdict(drawn.archive),
            "watching_keys": self.watcher is not None,
            "routing_keys": [dataclasses.asdict(seen) for seen in drawn.routing_keys],
        }

    # Dead letters -----------------------------------------------------------------
    def dead_letters(self, only: str | None = None) -> list[dict[str, Any]]:
        """Every subscriber's dead letters grouped by failure (``only``: one subscriber)."""
        rows = {row["name"]: row for row in self.management.queue_rows()}
        # An ordered subscriber has no queue of its own: found by its partitions.
        ordered = ordered_subscribers(
            [queue_record(row) for row in rows.values()],
            *self.management.all_bindings(),
            self.exchange,
        )
        candidates = {*rows, *(subscriber.summary.name for subscriber in ordered)}
        names = sorted(name for name in candidates if dead_letter_queue_name(name) in rows)
        if only is not None:
            if only not in names:
                raise LookupError(f"there is no subscriber {only!r} with a dead-letter queue")
            names = [only]
        with self._letters_lock:
            read = read_letters(self.url, {n: rows[dead_letter_queue_name(n)] for n in names})
        return [_letters_dict(one) for one in read]

    def start_action(
        self,
        subscriber: str,
        verb: str,
        matches: Callable[[Mapping[str, Any], bytes], bool],
        what: str,
        total: int,
    ) -> Job:
        if verb not in ("replay", "discard"):
            raise ValueError(f"unknown action {verb!r}: replay or discard")
        job = Job(next(self._job_ids), what, Progress(total), _now())
        self.jobs[job.id] = job
        finished = [known for known in self.jobs.values() if known.progress.done]
        for forgotten in finished[:-KEPT_JOBS]:
            del self.jobs[forgotten.id]  # /api/jobs answers for the recent ones only

        def run() -> None:
            try:
                with self._letters_lock:
                    left = act_on_group(self.url, subscriber, verb, matches, job.progress)
                done = "replayed" if verb == "replay" else "discarded"
                job.progress.summary = (
                    f"{done} {job.progress.matched} of {job.progress.visited} dead letters of "
                    f"{subscriber}; {left} left"
                )
            except Exception as error:  # shown on the page; the console goes on
                log.exception("console: %s failed", what)
                job.progress.error = f"{type(error).__name__}: {error}"
            finally:
                job.progress.done = True
                self.finished.appendleft(job)

        threading.Thread(target=run, name=f"console-job-{job.id}", daemon=True).start()
        return job

    # The outbox -------------------------------------------------------------------
    def outbox_view(self, limit: int = 100) -> dict[str, Any] | None:
        if self.outbox is None:
            return None
        status = self.outbox.status()
        oldest = status.oldest_pending_at
        age = (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else None
        return {
            "pending": status.pending,
            "retrying": status.retrying,
            "parked": status.parked,
            "oldest_pending_at": oldest.isoformat() if oldest else None,
            "oldest_pending_age_seconds": age,
            "parked_rows": [
                dataclasses.asdict(row)
                | {"created_at": row.created_at.isoformat(), "parked_at": row.parked_at.isoformat()}
                for row in self.outbox.parked(limit)
            ],
        }


def _letters_dict(read: SubscriberLetters) -> dict[str, Any]:
    by_position = {letter.position: letter for letter in read.letters}
    groups = []
    for group in read.groups:
        sample = by_position[group.positions[0]]
        event = sample.event
        groups.append(
            {
                "fingerprint": group.fingerprint,
                "exception_type": group.failure.exception_type,
                "pattern": group.failure.pattern,
                "count": group.count,
                "first_seen": group.first_seen,
                "last_seen": group.last_seen,
                "sample": {
                    "routing_key": sample.routing_key,
                    "exception": sample.exception,
                    "event": event.event_data if event is not None else None,
                    "body": None if event is not None else sample.body.decode("utf-8", "replace"),
                    "traceback": sample.traceback,
                },
                "events": [
                    {
                        "id": by_position[position].event_id,
                        "routing_key": by_position[position].routing_key,
                    }
                    for position in group.positions[:LISTED_LETTERS]
                ],
            }
        )
    return {
        "subscriber": read.subscriber,
        "count": read.count,
        "unreadable": read.unreadable,
        "groups": groups,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
