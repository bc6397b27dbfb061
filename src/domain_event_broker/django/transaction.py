"""Publishing from Django code: after the commit, or through the transactional outbox."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from ..events import DomainEvent
from ..outbox.store import outbox_entry
from ..publisher import publish_domain_event
from ..settings import DEFAULT, ConnectionSettings, resolve_url
from .conf import outbox_by_default

log = logging.getLogger(__name__)


def publish_on_commit(
    routing_key: str,
    data: Any = None,
    domain_object_id: str | None = None,
    uuid_string: str | None = None,
    timestamp: float | None = None,
    connection_settings: ConnectionSettings = "",
    *,
    outbox: bool | None = None,
    using: str | None = None,
) -> DomainEvent:
    """Publish a domain event once the current transaction has committed.

    Takes the arguments of :func:`~domain_event_broker.publish_domain_event`.
    Outside a transaction the event is published at once; inside nested
    ``atomic`` blocks, after the outermost one commits; after a rollback
    (also of a savepoint it was published in), never.

    The event is validated and serialised now, so a bad event raises here, in
    the transaction, rather than after the commit.

    With ``outbox=True`` (or the setting ``DOMAIN_EVENT_BROKER_OUTBOX = True``)
    the event is written as a row of the transactional outbox in the current
    transaction instead, and ``relay_domain_events`` publishes it: a broker
    that is down at commit time, or a process that dies right after the
    commit, no longer loses it.

    Returns the event (its ``uuid_string`` identifies it on the wire).

    :param using: the database alias whose transaction it belongs to.
    """
    use_outbox = outbox_by_default() if outbox is None else outbox
    if use_outbox:
        return _write_to_outbox(
            routing_key, data, domain_object_id, uuid_string, timestamp, connection_settings, using
        )
    # Validated and serialised now: a bad event raises here, not after the commit.
    event = outbox_entry(routing_key, data, domain_object_id, uuid_string, timestamp).event

    def publish() -> None:
        try:
            publish_domain_event(
                event.routing_key,
                event.data,
                event.domain_object_id,
                event.uuid_string,
                event.timestamp,
                connection_settings,
            )
        except Exception:
            # The data is committed and the event is not sent: say so loudly.
            log.exception(
                "event %s (%s) was not published after the commit; "
                "publish_on_commit(..., outbox=True) would have kept it",
                event.uuid_string,
                event.routing_key,
            )
            raise

    transaction.on_commit(publish, using=using)
    return event


def _write_to_outbox(
    routing_key: str,
    data: Any,
    domain_object_id: str | None,
    uuid_string: str | None,
    timestamp: float | None,
    connection_settings: ConnectionSettings,
    using: str | None,
) -> DomainEvent:
    if connection_settings not in ("", None, DEFAULT):
        raise ValueError(
            "publish_on_commit(..., outbox=True) cannot take connection_settings: "
            "the relay decides which broker outbox events go to"
        )
    entry = outbox_entry(routing_key, data, domain_object_id, uuid_string, timestamp)
    if resolve_url(connection_settings) is None:
        # No broker (DOMAIN_EVENT_BROKER = None): nothing is sent, so nothing is stored either.
        log.debug("no broker configured: event %s (%s) not stored", entry.uuid_string, routing_key)
        return entry.event
    from .models import OutboxEvent  # needs the app registry

    row = OutboxEvent.objects.using(using or DEFAULT_DB_ALIAS).create(
        routing_key=entry.routing_key, uuid_string=entry.uuid_string, payload=entry.payload
    )
    log.debug(
        "event %s (%s) written to the outbox as row %d", entry.uuid_string, routing_key, row.id
    )
    return entry.event
