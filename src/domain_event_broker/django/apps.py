"""The Django app config of ``domain_event_broker.django``."""

from __future__ import annotations

from django.apps import AppConfig

from .conf import apply_broker_setting


class DomainEventsConfig(AppConfig):
    name = "domain_event_broker.django"
    # The label of releases 2.x-3.x: it names the migrations and the admin section.
    label = "domain_event_broker_django"
    verbose_name = "Domain events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        apply_broker_setting()
