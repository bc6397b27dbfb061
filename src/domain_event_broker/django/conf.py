"""The Django settings this app reads, with their defaults."""

from __future__ import annotations

from django.conf import settings as django_settings

from .. import settings

#: Setting: the AMQP URL, or ``None`` for no broker.
BROKER_SETTING = "DOMAIN_EVENT_BROKER"
#: Setting: ``True`` makes ``publish_on_commit`` write to the outbox by default.
OUTBOX_SETTING = "DOMAIN_EVENT_BROKER_OUTBOX"


def apply_broker_setting() -> None:
    """Copy ``DOMAIN_EVENT_BROKER`` to ``domain_event_broker.settings.BROKER``, when set.

    Done once when the app is ready, as in releases 2.x-3.x, so that every
    publisher and subscriber in the process uses it.
    """
    if hasattr(django_settings, BROKER_SETTING):
        settings.BROKER = getattr(django_settings, BROKER_SETTING)


def outbox_by_default() -> bool:
    """Whether ``publish_on_commit`` writes to the outbox when not told otherwise."""
    return bool(getattr(django_settings, OUTBOX_SETTING, False))
