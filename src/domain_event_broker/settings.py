"""Where the broker is, and how its address is shown to people.

``BROKER`` is the default AMQP URL. Existing code changes it at start-up
(``settings.BROKER = ...``), so it is read at call time, never copied at import.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

#: Sentinel of releases 2.x: "use the default broker". ``''`` means the same.
DEFAULT = object()

#: The connection settings used for connecting to the RabbitMQ broker.
#: Default settings are for a local installation of RabbitMQ.
BROKER = "amqp://guest:guest@localhost:5672/%2F"
PUBLISH_TIMEOUT = 30.0  # seconds a publish waits for the broker's confirm (read at call time)

_PASSWORD_IN_URL = re.compile(
    r"^(?P<head>\s*[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)(?P<password>[^@/]*)@"
)


def resolve_url(connection_settings: object) -> str | None:
    """Return the AMQP URL that ``connection_settings`` stands for.

    ``''`` (and the old ``DEFAULT`` sentinel) mean :data:`BROKER`; ``None``
    means "no broker" and is returned as it is.
    """
    if connection_settings is None:
        return None
    if connection_settings == "" or connection_settings is DEFAULT:
        return BROKER
    if not isinstance(connection_settings, str):
        raise TypeError(
            "connection_settings must be an AMQP URL string, '' for the default broker "
            f"or None for no broker, not {type(connection_settings).__name__}"
        )
    return connection_settings


def mask_url(url: str | None) -> str:
    """Return ``url`` with its password replaced by ``***``, for logs and errors.

    >>> mask_url("amqp://app:s3cret@rabbit:5672/%2F")
    'amqp://app:***@rabbit:5672/%2F'
    """
    if url is None:
        return "<no broker>"
    return ",".join(_PASSWORD_IN_URL.sub(r"\g<head>***@", part) for part in url.split(","))


def split_urls(url: str) -> list[str]:
    """The URLs of a cluster's nodes: ``connection_settings`` may list several, comma-separated.

    >>> split_urls("amqp://rabbit-1/%2F, amqp://rabbit-2/%2F")
    ['amqp://rabbit-1/%2F', 'amqp://rabbit-2/%2F']
    """
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("connection_settings holds no AMQP URL")
    return urls


def describe_url(url: str) -> str:
    """Host, port and vhost of ``url`` in words, for error messages."""
    parts = urlsplit(url)
    secure = parts.scheme == "amqps"
    port = parts.port or (5671 if secure else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return f"host {parts.hostname or 'localhost'}, port {port}, vhost {vhost!r}"
