"""Declaring event handlers in Django apps, and running them with Django's database rules.

Handlers live in a module ``handlers.py`` of any installed app and are found
by ``consume_domain_events``::

    # shop/handlers.py
    from domain_event_broker.django import subscribe

    @subscribe("shop-welcome-mailer", ["user.registered"], dead_letter=True, idempotent=True)
    def send_welcome_mail(event):
        Mail.objects.create(user_id=event.data["user_id"])
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import close_old_connections
from django.utils.module_loading import autodiscover_modules

from ..events import DomainEvent
from ..subscriber import Handler
from ..topology import QueueType, normalise_binding_keys
from .inbox import idempotent as make_idempotent

log = logging.getLogger(__name__)

#: The module of each installed app that ``consume_domain_events`` imports.
HANDLERS_MODULE = "handlers"

AnyHandler = TypeVar("AnyHandler", bound=Callable[[DomainEvent], Any])


@dataclass(frozen=True)
class HandlerRegistration:
    """A handler declared with :func:`subscribe`, and how to register it on a Subscriber."""

    handler: Handler
    name: str
    binding_keys: tuple[str, ...]
    idempotent: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def django_handler(self) -> Handler:
        """The handler as a worker runs it: with fresh database connections, maybe idempotent."""
        handler = self.handler
        if self.idempotent:
            handler = make_idempotent(self.name)(handler)
        return with_fresh_connections(handler)


_registry: dict[str, HandlerRegistration] = {}


def subscribe(
    name: str,
    binding_keys: str | Sequence[str],
    *,
    dead_letter: bool = False,
    durable: bool = True,
    exclusive: bool = False,
    auto_delete: bool = False,
    max_retries: int = 0,
    queue_type: QueueType = "classic",
    idempotent: bool = False,
) -> Callable[[AnyHandler], AnyHandler]:
    """Declare the decorated function as the handler of subscriber ``name``.

    The options are those of :meth:`~domain_event_broker.Subscriber.register`.
    With ``idempotent=True`` each event runs in a transaction and at most once
    for this subscriber (see :func:`~domain_event_broker.django.idempotent`).
    The function itself is returned unchanged, so tests can call it directly.
    """
    keys = tuple(normalise_binding_keys(binding_keys))

    def declare(handler: AnyHandler) -> AnyHandler:
        registration = HandlerRegistration(
            handler=handler,
            name=name,
            binding_keys=keys,
            idempotent=idempotent,
            options={
                "dead_letter": dead_letter,
                "durable": durable,
                "exclusive": exclusive,
                "auto_delete": auto_delete,
                "max_retries": max_retries,
                "queue_type": queue_type,
            },
        )
        known = _registry.get(name)
        if known is not None and _qualified_name(known.handler) != _qualified_name(handler):
            raise ValueError(
                f"subscriber {name!r} is declared twice: by {_qualified_name(known.handler)} "
                f"and by {_qualified_name(handler)}; give each handler a name of its own"
            )
        _registry[name] = registration
        return handler

    return declare


def autodiscover_handlers() -> dict[str, HandlerRegistration]:
    """Import ``handlers.py`` of every installed app; return every declared handler by name."""
    autodiscover_modules(HANDLERS_MODULE)
    return dict(_registry)


def registered_handlers() -> dict[str, HandlerRegistration]:
    """The handlers declared so far, by subscriber name."""
    return dict(_registry)


def with_fresh_connections(handler: Handler) -> Handler:
    """Run ``handler`` the way Django runs a request: stale database connections closed around it.

    A long-running worker otherwise keeps a connection that the database
    closed long ago (or one older than ``CONN_MAX_AGE``), and fails on it.
    """

    @functools.wraps(handler)
    def handle(event: DomainEvent) -> object:
        close_old_connections()
        try:
            return handler(event)
        finally:
            close_old_connections()

    return handle


def _qualified_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", "?")
    return f"{module}.{getattr(handler, '__qualname__', repr(handler))}"
