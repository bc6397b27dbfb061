"""An in-memory broker for your own tests: same routing, retries and dead letters, no RabbitMQ.

>>> from domain_event_broker import Retry, publish_domain_event
>>> from domain_event_broker.testing import InMemoryBroker
>>> mails = []
>>> def send_welcome_mail(event):
...     mails.append(event.data["user_id"])
>>> with InMemoryBroker() as broker:
...     broker.register(send_welcome_mail, "welcome-mailer", ["user.registered"], dead_letter=True)
...     _ = publish_domain_event("user.registered", {"user_id": 7})  # your code under test
...     delivered = broker.run()
>>> mails
[7]

Inside ``with InMemoryBroker()``, :func:`publish_domain_event` hands events to
the in-memory broker instead of RabbitMQ. :meth:`InMemoryBroker.run` delivers
everything, retries included, on a virtual clock: a ``Retry(30)`` does not make
your test wait 30 seconds. The behaviour (``*`` and ``#`` routing,
``event.retries``, ``max_retries``, dead-lettering, replay to one subscriber
only) is checked by one test suite run against both this broker and RabbitMQ.

A pytest fixture is one line in your ``conftest.py``::

    @pytest.fixture
    def broker():
        with InMemoryBroker() as broker:
            yield broker
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .contracts.handlers import typed_registration
from .core.archive import matches
from .core.history import StartFrom, registration_start
from .core.ordering import object_key
from .core.outcome import Action, Policy, decide
from .core.topology import registration_topology
from .events import DomainEvent, topic_matches, validate_routing_key
from .handlers import Handler, HandlerRunner
from .publisher import EventSink, redirect_events
from .topology import SubscriberTopology

log = logging.getLogger(__name__)


@dataclass
class DeadLetter:
    """A failed event in an in-memory dead-letter queue, with why it failed."""

    event: DomainEvent
    exception: BaseException


@dataclass
class _Subscription:
    handler: Handler
    topology: SubscriberTopology
    max_retries: int
    queue: deque[tuple[str, int]] = field(default_factory=deque)  # (event json, retries)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Ordered subscribers: objects with an event waiting for its retry (later ones wait).
    held: set[str] = field(default_factory=set)

    def next_index(self) -> int | None:
        """Where the next event to deliver is in the queue; None when nothing may go now."""
        if not self.topology.partitions:
            return 0 if self.queue else None
        for index, (body, retries) in enumerate(self.queue):
            if retries or object_key(None, body.encode()) not in self.held:
                return index
        return None


class UnroutedEventWarning(UserWarning):
    """An event published into an :class:`InMemoryBroker` that no registered subscriber binds."""


class InMemoryBroker:
    """Routes events between registered handlers in this process, synchronously."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, _Subscription] = {}
        self._waiting: list[
            tuple[float, int, str, str, int]
        ] = []  # (due, seq, name, json, retries)
        self._sequence = itertools.count()
        self._previous_sink: EventSink | None = None
        #: The contract version of each typed event published, by event id.
        self._versions: dict[str, int] = {}
        #: Virtual seconds since the broker was made; retries advance it.
        self.clock = 0.0
        #: Every event published while the broker was installed, in order.
        self.published: list[DomainEvent] = []

    # Installing ------------------------------------------------------------------
    def __enter__(self) -> InMemoryBroker:
        self._previous_sink = redirect_events(self.publish)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        redirect_events(self._previous_sink)

    # The API of Subscriber and publish_domain_event --------------------------------
    def register(
        self,
        handler: Handler,
        name: str,
        binding_keys: str | Sequence[str | type[DomainEvent]] = (),
        dead_letter: bool = False,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        max_retries: int = 0,
        *,
        start_from: StartFrom | None = None,
        ordered_by: str | None = None,
        partitions: int | None = None,
        **options: Any,
    ) -> None:
        """Register like :meth:`Subscriber.register` (same validation of name and keys).

        There is no archive here: with ``start_from``, the events published into
        this broker so far (:attr:`published`) stand in for it. Those the binding
        keys match and not older than ``start_from`` are queued first, in publish
        order, then live ones follow: each once, as on RabbitMQ.

        ``ordered_by="domain_object_id"``: as on RabbitMQ, a retried event holds the
        later events of its object until it is handled or dead-lettered.
        """
        handler, binding_keys = typed_registration(handler, binding_keys)
        start = registration_start(start_from, ordered_by, time.time())
        topology = registration_topology(
            name,
            binding_keys,
            kind=SubscriberTopology,
            max_retries=max_retries,
            registered=self._subscriptions,
            dead_letter=dead_letter,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            ordered_by=ordered_by,
            partitions=partitions,
        )
        subscription = self._subscriptions[name] = _Subscription(handler, topology, max_retries)
        if start is not None:
            for event in self.published:
                if matches(topology.binding_keys, event.routing_key) and start.admits(
                    event.timestamp
                ):
                    subscription.queue.append((event.to_json(), 0))

    def publish(self, event: DomainEvent) -> DomainEvent:
        """Route ``event`` to every subscription whose binding keys match."""
        validate_routing_key(event.routing_key)
        body = event.to_json()
        self.published.append(event)
        if event.version is not None:  # a typed event's header, which the body never holds
            self._versions[event.uuid_string] = event.version
        routed = False
        for subscription in self._subscriptions.values():
            if any(
                topic_matches(key, event.routing_key) for key in subscription.topology.binding_keys
            ):
                subscription.queue.append((body, 0))
                routed = True
        if self._subscriptions and not routed:
            # On RabbitMQ too it would go nowhere; in a test it is mostly a typo'd key.
            warnings.warn(
                f"event {event.routing_key!r} matches no binding of the subscribers registered "
                f"here ({self._bindings()}): no handler gets it. A typo in a routing or "
                "binding key?",
                UnroutedEventWarning,
                stacklevel=2,
            )
        return event

    def _bindings(self) -> str:
        return "; ".join(
            f"{name}: {', '.join(subscription.topology.binding_keys)}"
            for name, subscription in self._subscriptions.items()
        )

    def publish_domain_event(
        self, routing_key: str, data: Any = None, **fields: Any
    ) -> DomainEvent:
        """Like :func:`publish_domain_event`, straight into this broker."""
        return self.publish(DomainEvent(routing_key, data, **fields))

    # Running ------------------------------------------------------------------------
    def run(self, max_deliveries: int = 10_000) -> int:
        """Deliver until nothing is left, retries included; return how many were delivered.

        Waiting retries come back in order of their due time; the virtual clock
        jumps ahead to each. ``async def`` handlers are awaited.
        """
        delivered = 0
        runner = HandlerRunner()
        try:
            while delivered < max_deliveries:
                ready = (
                    (s, index)
                    for s in self._subscriptions.values()
                    if (index := s.next_index()) is not None
                )
                subscription, index = next(ready, (None, 0))
                if subscription is None:
                    if not self._waiting:
                        return delivered
                    due, _, name, body, retries = heapq.heappop(self._waiting)
                    self.clock = max(self.clock, due)
                    self._subscriptions[name].queue.append((body, retries))
                    continue
                body, retries = subscription.queue[index]
                del subscription.queue[index]
                self._deliver(subscription, body, retries, runner)
                delivered += 1
        finally:
            runner.close()
        raise RuntimeError(f"still delivering after {max_deliveries} deliveries: a retry loop?")

    def _deliver(
        self, subscription: _Subscription, body: str, retries: int, runner: HandlerRunner
    ) -> None:
        """One delivery, decided by the same rule as RabbitMQ's subscribers (outcome.decide)."""
        topology = subscription.topology
        policy = Policy(topology.name, subscription.max_retries, topology.dead_letter)
        event = DomainEvent.from_json(body)  # a copy: handlers may change what they get
        event.retries = retries
        event.version = self._versions.get(event.uuid_string)
        raised: BaseException | None = None
        try:
            runner.call(subscription.handler, event, topology.name)
        except BaseException as error:  # decided below, as the Subscriber decides
            raised = error
        outcome = decide(policy, retries, raised)
        if topology.partitions and event.domain_object_id is not None:
            key = str(event.domain_object_id)
            if outcome.action is Action.RETRY:
                subscription.held.add(key)
            else:
                subscription.held.discard(key)
        if outcome.action is Action.RETRY:
            heapq.heappush(
                self._waiting,
                (
                    self.clock + outcome.delay,
                    next(self._sequence),
                    topology.name,
                    body,
                    retries + 1,
                ),
            )
        elif outcome.action is Action.REQUEUE:
            # A handler asked the process to stop: the event stays, the stop goes on.
            subscription.queue.appendleft((body, retries))
            assert raised is not None
            raise raised
        elif outcome.failed:
            assert raised is not None
            self._dead_letter(subscription, event, raised)

    def _dead_letter(
        self, subscription: _Subscription, event: DomainEvent, error: BaseException
    ) -> None:
        log.error(
            "in-memory subscriber %s: event %s (%s) failed: %r",
            subscription.topology.name,
            event.uuid_string,
            event.routing_key,
            error,
        )
        if subscription.topology.dead_letter:
            subscription.dead_letters.append(DeadLetter(event, error))

    # Looking and replaying -------------------------------------------------------------
    def waiting(self, name: str) -> list[DomainEvent]:
        """Events in subscriber ``name``'s queue, not yet delivered."""
        return [DomainEvent.from_json(body) for body, _ in self._subscription(name).queue]

    def dead_letters(self, name: str) -> list[DeadLetter]:
        """The dead letters of subscriber ``name`` (it must have ``dead_letter=True``)."""
        subscription = self._subscription(name)
        if not subscription.topology.dead_letter:
            raise ValueError(f"subscriber {name!r} has no dead-letter queue")
        return list(subscription.dead_letters)

    def replay_all(self, name: str) -> int:
        """Put every dead letter of ``name`` back into its queue (only its); return 0 left."""
        subscription = self._subscription(name)
        for letter in subscription.dead_letters:
            subscription.queue.append((letter.event.to_json(), 0))
        subscription.dead_letters.clear()
        return 0

    def _subscription(self, name: str) -> _Subscription:
        try:
            return self._subscriptions[name]
        except KeyError:
            raise ValueError(f"no subscriber named {name!r} is registered") from None
