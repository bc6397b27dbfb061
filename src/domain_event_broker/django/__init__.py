"""Django integration: add ``"domain_event_broker.django"`` to ``INSTALLED_APPS``.

Settings:

- ``DOMAIN_EVENT_BROKER``: the AMQP URL (or anything ``connection_settings``
  takes), or ``None`` to send nothing (and fail nothing); it comes before
  ``domain_event_broker.settings.BROKER`` and ``$DOMAIN_EVENT_BROKER``.
- ``DOMAIN_EVENT_BROKER_SSL``: TLS, ``{"ca_file", "cert_file", "key_file",
  "external_auth"}`` (each optional).
- ``DOMAIN_EVENT_BROKER_CONNECTION_NAME``: the name RabbitMQ shows for the connections.
- ``DOMAIN_EVENT_BROKER_OUTBOX``: ``True`` makes :func:`publish_on_commit` write
  to the transactional outbox by default (default ``False``).

Management commands: ``replay_domain_event``, ``consume_domain_events`` and
``relay_domain_events``.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ModuleNotFoundError as error:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        "domain_event_broker.django needs Django: pip install 'domain-event-broker[django]'"
    ) from error

from .inbox import idempotent, process_once
from .registry import subscribe
from .transaction import publish_on_commit

__all__ = ["idempotent", "process_once", "publish_on_commit", "subscribe"]
