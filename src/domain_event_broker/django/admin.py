"""Outbox and inbox rows in the Django admin: what happened to an event?

Rows are read-only; parked outbox rows (the relay gave up after too many
refusals) can be retried or discarded with the list's actions, as with
``manage.py domain_events_outbox retry|discard``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.contrib import admin, messages
from django.db.models import Q

from .models import OutboxEvent, ProcessedEvent
from .outbox import PENDING


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


_F = TypeVar("_F", bound=Callable[..., Any])


def _action(description: str, permission: str) -> Callable[[_F], _F]:
    # Django ships no type hints; keep the methods typed for mypy.
    return cast(Callable[[_F], _F], admin.action(description=description, permissions=[permission]))


def _display(description: str) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], admin.display(description=description))


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"
    _states = {
        "pending": PENDING & Q(attempts=0),
        "retrying": PENDING & Q(attempts__gt=0),
        "parked": Q(parked_at__isnull=False),
        "sent": Q(sent_at__isnull=False),
    }

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("pending", "pending"),
            ("retrying", "refused, to be tried again"),
            ("parked", "parked (given up)"),
            ("sent", "sent"),
        ]

    def queryset(self, request: Any, queryset: Any) -> Any:
        chosen = self._states.get(self.value() or "")
        return queryset if chosen is None else queryset.filter(chosen)


@admin.register(OutboxEvent)
class OutboxEventAdmin(_ReadOnly):
    list_display = (
        "id",
        "routing_key",
        "uuid_string",
        "state",
        "attempts",
        "created_at",
        "sent_at",
        "next_attempt_at",
        "short_error",
    )
    list_filter = (StateFilter, ("sent_at", admin.EmptyFieldListFilter), "routing_key")
    search_fields = ("uuid_string", "routing_key")
    ordering = ("-id",)
    actions = ("retry_parked", "discard_parked")

    @_display("last error")
    def short_error(self, obj: OutboxEvent) -> str:
        error = obj.last_error or ""
        return error if len(error) <= 120 else f"{error[:117]}..."

    def has_retry_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm("domain_event_broker_django.change_outboxevent"))

    @_action("Retry the selected parked rows", "retry")
    def retry_parked(self, request: Any, queryset: Any) -> None:
        count = queryset.filter(parked_at__isnull=False).update(
            attempts=0, next_attempt_at=None, parked_at=None
        )
        self.message_user(request, f"{count} parked rows are pending again", messages.SUCCESS)

    @_action("Discard the selected parked rows", "delete")
    def discard_parked(self, request: Any, queryset: Any) -> None:
        count, _ = queryset.filter(parked_at__isnull=False).delete()
        self.message_user(request, f"{count} parked rows discarded", messages.SUCCESS)


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(_ReadOnly):
    list_display = ("subscriber", "uuid_string", "processed_at")
    list_filter = ("subscriber",)
    search_fields = ("uuid_string",)
    ordering = ("-id",)
