"""Outbox and inbox rows in the Django admin, read-only: what happened to an event?"""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from .models import OutboxEvent, ProcessedEvent


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(OutboxEvent)
class OutboxEventAdmin(_ReadOnly):
    list_display = ("id", "routing_key", "uuid_string", "created_at", "sent_at")
    list_filter = (("sent_at", admin.EmptyFieldListFilter), "routing_key")
    search_fields = ("uuid_string", "routing_key")
    ordering = ("-id",)


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(_ReadOnly):
    list_display = ("subscriber", "uuid_string", "processed_at")
    list_filter = ("subscriber",)
    search_fields = ("uuid_string",)
    ordering = ("-id",)
