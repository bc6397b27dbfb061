"""What travels through the delivery path: a registration and one delivery of it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pika

from ..core.acks import Ticket
from ..core.outcome import Policy
from ..handlers import Handler
from ..topology import SubscriberTopology


@dataclass(frozen=True)
class Registration:
    """One registered handler: its queues and what to do with its failed events."""

    handler: Handler
    topology: SubscriberTopology
    max_retries: int

    @property
    def name(self) -> str:
        return self.topology.name

    @functools.cached_property  # read for every delivery; the registration never changes
    def policy(self) -> Policy:
        return Policy(self.topology.name, self.max_retries, self.topology.dead_letter)


class Delivery:
    """One message from RabbitMQ, handed from the I/O thread to a worker and back."""

    __slots__ = (
        "body",
        "event_id",
        "held_retries",
        "object_key",
        "offset",
        "properties",
        "registration",
        "retries",
        "routing_key",
        "ticket",
    )

    def __init__(
        self,
        registration: Registration,
        ticket: Ticket,
        routing_key: str,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.registration = registration
        self.ticket = ticket
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        #: Earlier deliveries to this subscriber, once the body was read as an event.
        self.retries = 0
        self.event_id: str | None = properties.message_id
        #: Its offset in the archive, for a history event (None: from the subscriber's queue).
        self.offset: int | None = None
        #: Its place in the line of an ordered subscriber (None: starts at once).
        self.object_key: tuple[str, str] | None = None
        #: Retries held in this process (ordered subscribers), not yet in a header.
        self.held_retries = 0
