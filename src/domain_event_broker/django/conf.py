"""The Django settings this app reads, with their defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

from .. import settings
from ..settings import BrokerSettings

#: Setting: the broker (an AMQP URL, a list of them, pika parameters or a
#: ``BrokerSettings``), or ``None`` for no broker.
BROKER_SETTING = "DOMAIN_EVENT_BROKER"
#: Setting: TLS for the broker, a dict with ``ca_file``, ``cert_file``, ``key_file``
#: and ``external_auth`` (log in with the client certificate), each optional.
SSL_SETTING = "DOMAIN_EVENT_BROKER_SSL"
#: Setting: the name RabbitMQ shows for this project's connections.
CONNECTION_NAME_SETTING = "DOMAIN_EVENT_BROKER_CONNECTION_NAME"
#: Setting: ``True`` makes ``publish_on_commit`` write to the outbox by default.
OUTBOX_SETTING = "DOMAIN_EVENT_BROKER_OUTBOX"

_SSL_KEYS = ("ca_file", "cert_file", "key_file", "external_auth")


def apply_broker_setting() -> None:
    """Make the Django settings the default broker (read at each use, so tests may override them).

    ``DOMAIN_EVENT_BROKER`` is also copied to ``domain_event_broker.settings.BROKER``
    when it is a URL or ``None``, as releases 2.x-3.x did, for code that reads it.
    """
    settings.framework_default = django_broker
    if hasattr(django_settings, BROKER_SETTING):
        value = getattr(django_settings, BROKER_SETTING)
        if value is None or isinstance(value, str):
            settings.BROKER = value


def django_broker() -> object:
    """The broker the Django settings name, as connection settings (``NOT_SET`` if none)."""
    has_broker = hasattr(django_settings, BROKER_SETTING)
    tls: dict[str, Any] = dict(getattr(django_settings, SSL_SETTING, None) or {})
    name = getattr(django_settings, CONNECTION_NAME_SETTING, None)
    if not has_broker and not tls and not name:
        return settings.NOT_SET
    value = getattr(django_settings, BROKER_SETTING, "")
    if value is None:
        return None
    unknown = set(tls) - set(_SSL_KEYS)
    if unknown:
        raise ValueError(
            f"{SSL_SETTING} has unknown keys {sorted(unknown)}; known: {', '.join(_SSL_KEYS)}"
        )
    options = BrokerSettings(connection_name=name, **tls)
    if isinstance(value, BrokerSettings):
        return options.on(value) if (tls or name) else value
    # A URL, list or pika parameters; '' leaves the broker to BROKER or the environment.
    return options.on(BrokerSettings(value)) if value != "" else options


def outbox_by_default() -> bool:
    """Whether ``publish_on_commit`` writes to the outbox when not told otherwise."""
    return bool(getattr(django_settings, OUTBOX_SETTING, False))
