"""Idempotent handlers: remember handled events in the handler's own transaction."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.db.transaction import TransactionManagementError

from ..events import DomainEvent

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def process_once(subscriber: str, event: DomainEvent, *, using: str | None = None) -> bool:
    """Record that ``subscriber`` handles ``event``; ``False`` when it already did.

    Call it inside ``transaction.atomic()``, before the handler's own writes:
    the record commits or rolls back with them, so an event that is
    redelivered (a relay re-sent it, a worker died before its ack) is handled
    once. A handler that fails leaves no record and is handled again.

    >>> with transaction.atomic():  # doctest: +SKIP
    ...     if process_once("welcome-mailer", event):
    ...         Mail.objects.create(user_id=event.data["user_id"])
    """
    from .models import ProcessedEvent

    alias = using or DEFAULT_DB_ALIAS
    if not transaction.get_connection(alias).in_atomic_block:
        raise TransactionManagementError(
            "process_once() must run inside transaction.atomic(), so that the record "
            "commits together with the handler's own writes"
        )
    try:
        # A savepoint: a duplicate must not break the surrounding transaction.
        with transaction.atomic(using=alias):
            ProcessedEvent.objects.using(alias).create(
                subscriber=subscriber, uuid_string=event.uuid_string
            )
    except IntegrityError:
        log.info(
            "subscriber %s already handled event %s (%s); skipping it",
            subscriber,
            event.uuid_string,
            event.routing_key,
        )
        return False
    return True


def idempotent(
    subscriber: str, *, using: str | None = None
) -> Callable[[Callable[[DomainEvent], Result]], Callable[[DomainEvent], Result | None]]:
    """Make a handler run in a transaction and at most once per event for ``subscriber``.

    >>> @idempotent("welcome-mailer")  # doctest: +SKIP
    ... def send_welcome_mail(event):
    ...     Mail.objects.create(user_id=event.data["user_id"])

    A redelivered event that was handled before is skipped (the wrapper
    returns ``None``).
    """

    def decorate(
        handler: Callable[[DomainEvent], Result],
    ) -> Callable[[DomainEvent], Result | None]:
        @functools.wraps(handler)
        def handle_once(event: DomainEvent) -> Result | None:
            with transaction.atomic(using=using):
                if not process_once(subscriber, event, using=using):
                    return None
                return handler(event)

        return handle_once

    return decorate
