"""Publishing from Django code: after the commit, or through the transactional outbox."""

from __future__ import annotations

import inspect
import logging
from typing import Any, Literal, overload

from django.db import DEFAULT_DB_ALIAS, transaction

from .. import observability
from .. import publisher as _publisher
from ..events import DomainEvent
from ..observability import Occurrence
from ..outbox.store import outbox_entry
from ..publisher import publish_domain_event
from ..settings import DEFAULT, ConnectionSettings, resolve_url
from .conf import outbox_by_default

log = logging.getLogger(__name__)

# publish_on_commit binds its arguments to this (not to the module name below,
# which a test suite may have replaced with a mock).
_PUBLISH_SIGNATURE = inspect.signature(_publisher.publish_domain_event)
_EVENT_FIELDS = (
    "routing_key",
    "data",
    "domain_object_id",
    "uuid_string",
    "timestamp",
    "connection_settings",
)


@overload
def publish_on_commit(
    *args: Any, outbox: Literal[True], using: str | None = None, **kwargs: Any
) -> DomainEvent: ...
@overload
def publish_on_commit(
    *args: Any, outbox: bool | None = None, using: str | None = None, **kwargs: Any
) -> DomainEvent | None: ...
def publish_on_commit(
    *args: Any, outbox: bool | None = None, using: str | None = None, **kwargs: Any
) -> DomainEvent | None:
    """Publish a domain event once the current transaction has committed.

    Takes the arguments of :func:`~domain_event_broker.publish_domain_event`
    and, after the commit, calls it with exactly those arguments (as 3.x did:
    test suites patch ``domain_event_broker.django.transaction.publish_domain_event``
    and check the call). Outside a transaction the event is published at once
    and an error reaches the caller; inside nested ``atomic`` blocks, after the
    outermost one commits; after a rollback (also of a savepoint it was
    published in), never.

    The arguments are validated and the event serialised now, so a bad event
    raises here, in the transaction, rather than after the commit.

    Inside a transaction, a failure to publish after the commit is logged as an
    ERROR (with the routing key, and the event id when the caller gave one) and
    reported to metrics listeners as ``publish_failed``; it never makes Django
    skip the transaction's other commit hooks (later events, the application's
    own ``transaction.on_commit`` callbacks).

    Returns ``None``, as 3.x did: the event's id and timestamp are made when
    it is published. Pass ``uuid_string`` to know the id beforehand.

    With ``outbox=True`` (or the setting ``DOMAIN_EVENT_BROKER_OUTBOX = True``)
    the event is written as a row of the transactional outbox in the current
    transaction instead, and ``relay_domain_events`` publishes it: a broker
    that is down at commit time, or a process that dies right after the
    commit, no longer loses it. Then the stored event is returned (the relay
    publishes that row as it is).

    :param using: the database alias whose transaction it belongs to.
    """
    fields = _event_fields(args, kwargs)
    use_outbox = outbox_by_default() if outbox is None else outbox
    if use_outbox:
        return _write_to_outbox(using=using, **fields)
    # Validated and serialised now: a bad event raises here, not after the commit.
    entry = outbox_entry(
        fields["routing_key"],
        fields["data"],
        fields["domain_object_id"],
        fields["uuid_string"],
        fields["timestamp"],
    )
    routing_key, event_id = entry.routing_key, fields["uuid_string"]
    in_transaction = bool(transaction.get_connection(using).in_atomic_block)

    def publish() -> None:
        try:
            # Looked up now, with the caller's own arguments: the name test suites patch.
            publish_domain_event(*args, **kwargs)
        except Exception:
            if observability.listening():
                observability.notify(Occurrence("publish_failed", routing_key, event_id))
            if not in_transaction:
                raise  # published at once: the caller gets the error, as in 3.x
            # The data is committed and the event is not sent: say so loudly, and
            # let the transaction's other commit hooks run.
            log.error(
                "event %s (%s) was not published after the commit; the change is committed "
                "without it. publish_on_commit(..., outbox=True) would have kept it",
                event_id or "(id made at publish)",
                routing_key,
                exc_info=True,
            )

    # robust: should anything still escape, Django logs it and runs the other hooks.
    transaction.on_commit(publish, using=using, robust=in_transaction)
    return None


def _event_fields(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The event fields among ``publish_domain_event``'s arguments; a TypeError as a call would."""
    try:
        bound = _PUBLISH_SIGNATURE.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"publish_on_commit(): {error}") from None
    bound.apply_defaults()
    return {name: bound.arguments[name] for name in _EVENT_FIELDS}


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
        routing_key=entry.routing_key,
        uuid_string=entry.uuid_string,
        payload=entry.payload,
        headers=entry.headers(),
    )
    log.debug(
        "event %s (%s) written to the outbox as row %d", entry.uuid_string, routing_key, row.id
    )
    return entry.event
