"""What RabbitMQ's refusals of a subscriber's declarations mean, and how an operator fixes them.

The words of :class:`~domain_event_broker.errors.TopologyMismatch` and
:class:`~domain_event_broker.errors.AccessRefused`, for both drivers.
"""

from __future__ import annotations

import re
from typing import Protocol

from .rabbitmq import regex_literal


class NamedSubscriber(Protocol):
    """What an explanation needs of a subscriber's topology."""

    @property
    def name(self) -> str: ...

    @property
    def exchange(self) -> str: ...


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']+)'"
)


def explain_precondition_failed(reply_text: str, topology: NamedSubscriber) -> str:
    """What RabbitMQ's PRECONDITION_FAILED on a declare means, and how to migrate."""
    match = _INEQUIVALENT.search(reply_text)
    if match is None:
        what = "a queue or exchange"
        argument = "its properties"
    else:
        what = f"{match['kind']} {match['name']!r}"
        argument = f"argument {match['arg']!r}"
    return (
        f"{what} of subscriber {topology.name!r} already exists on RabbitMQ with a different "
        f"{argument} than this subscriber declares (RabbitMQ said: {reply_text}). "
        "To migrate: stop the subscriber's consumers, move or drain its events, delete the "
        "queue (rabbitmqctl delete_queue NAME, or the management UI) and start the "
        "subscriber again; or register it with the options it was created with."
    )


def explain_access_refused(reply_text: str, topology: NamedSubscriber) -> str:
    """What RabbitMQ's ACCESS_REFUSED (403) on a subscriber's declare means, and the fix."""
    own = f"{regex_literal(topology.name)}(-.*)?"
    exchange = regex_literal(topology.exchange)
    return (
        f"RabbitMQ refused subscriber {topology.name!r} access (RabbitMQ said: {reply_text}). "
        f"Its user needs configure, write and read on the queues and exchanges named "
        f"{topology.name!r} or starting with '{topology.name}-' (dead letters, retries, and "
        f"the wait queues {topology.name}-wait-<ms>), configure and read on the exchange "
        f"{topology.exchange!r}, and write on amq.default: rabbitmqctl set_permissions -p "
        f"<vhost> <user> '^({own}|{exchange})$' '^({own}|amq\\.default)$' "
        f"'^({own}|{exchange})$'."
    )
