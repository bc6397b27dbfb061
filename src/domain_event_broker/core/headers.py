"""The headers of our own that events and their copies carry: each name once.

They travel beside the 3.x body (which stays as 3.x writes it): subscribers of
2.x-3.x ignore them, and RabbitMQ never rewrites them.
"""

from __future__ import annotations

# Headers of our own. RabbitMQ 4.x drops x-death headers that a client sets, so
# the retry count travels in a header that RabbitMQ never touches.
RETRIES_HEADER = "x-domain-event-retries"
FAILED_SUBSCRIBER_HEADER = "x-domain-event-failed-subscriber"
EXCEPTION_TYPE_HEADER = "x-domain-event-exception-type"
EXCEPTION_MESSAGE_HEADER = "x-domain-event-exception-message"
FAILED_AT_HEADER = "x-domain-event-failed-at"
#: The handler's traceback (its last 4 KiB), for operators grouping failures.
TRACEBACK_HEADER = "x-domain-event-traceback"
# The event's routing key, where a copy travels under another one: a retry copy
# (it comes back from its wait queue with the queue's name as routing key) and a
# dead letter that had to bypass the dead-letter exchange.
ROUTING_KEY_HEADER = "x-domain-event-routing-key"
#: How often an event was replayed from a dead-letter queue (set by replay).
REPLAYED_HEADER = "x-domain-event-replayed"
#: The contract version of a typed event's body (never in the body: 3.x ignores headers).
#: No header: the version the subscriber knows as current (an untyped or 3.x publisher).
VERSION_HEADER = "x-domain-event-version"
#: ``str(domain_object_id)`` on every event that has one: what the partitions hash.
OBJECT_ID_HEADER = "x-domain-object-id"

#: Headers that describe one delivery attempt; a replayed event starts afresh.
ATTEMPT_HEADERS = (
    RETRIES_HEADER,
    FAILED_SUBSCRIBER_HEADER,
    EXCEPTION_TYPE_HEADER,
    EXCEPTION_MESSAGE_HEADER,
    FAILED_AT_HEADER,
    TRACEBACK_HEADER,
    ROUTING_KEY_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
