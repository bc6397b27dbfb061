"""Where the broker is and how to log in: :class:`BrokerSettings`.

Also what ``connection_settings`` may be, and how any of them is shown without a password.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from pika.connection import Parameters

from .urls import describe_parameters, mask_text, split_urls

if TYPE_CHECKING:
    import ssl

# A node of a cluster: an AMQP URL or pika connection parameters.
Node: TypeAlias = str | Parameters


class BrokerSettings:
    """Where the broker is and how to log in: accepted wherever ``connection_settings`` is.

    >>> BrokerSettings("amqps://app:s3cret@rabbit/%2F", ca_file="/etc/ssl/our-ca.pem")
    BrokerSettings('amqps://app:***@rabbit/%2F', ca_file='/etc/ssl/our-ca.pem')

    ``url``: an AMQP URL (several, comma-separated, for the nodes of a cluster),
    a list of URLs, pika ``ConnectionParameters`` or a list of them; ``''`` is
    the default broker (see the module docstring), to which the other options
    then apply.

    TLS: either ``ssl_context`` (an :class:`ssl.SSLContext` of your own) or
    ``ca_file`` (the CA that signed the broker's certificate; default: the
    system's CAs) and ``cert_file``/``key_file`` (a client certificate). TLS
    needs ``amqps://`` URLs (port 5671 unless the URL says otherwise).

    ``external_auth``: log in with the client certificate (SASL EXTERNAL; the
    broker needs the ``rabbitmq_auth_mechanism_ssl`` plugin) instead of the
    URL's user name and password.

    ``connection_name``: the name RabbitMQ shows for the connections (default:
    :data:`CONNECTION_NAME`, else one of our own).

    ``service_name``: the service these connections belong to, sent as the
    client property ``service`` so that ``domain-events console`` can name who
    publishes and who listens (default: ``$DOMAIN_EVENT_BROKER_SERVICE``, else
    the program's name).
    """

    __slots__ = (
        "ca_file",
        "cert_file",
        "connection_name",
        "external_auth",
        "key_file",
        "nodes",
        "service_name",
        "ssl_context",
    )

    def __init__(
        self,
        url: Node | Sequence[Node] = "",
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        external_auth: bool = False,
        connection_name: str | None = None,
        service_name: str | None = None,
    ) -> None:
        #: The nodes to connect to, tried in turn; empty for "the default broker".
        self.nodes: tuple[Node, ...] = nodes_of(url)
        if ssl_context is not None and (ca_file or cert_file or key_file):
            raise ValueError("give either ssl_context or ca_file/cert_file/key_file, not both")
        if key_file and not cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        self.ssl_context = ssl_context
        self.ca_file = os.fspath(ca_file) if ca_file else None
        self.cert_file = os.fspath(cert_file) if cert_file else None
        self.key_file = os.fspath(key_file) if key_file else None
        self.external_auth = bool(external_auth)
        self.connection_name = connection_name
        self.service_name = service_name

    @property
    def uses_tls_settings(self) -> bool:
        """Whether TLS options were given (an ``amqps://`` URL alone uses the system's CAs)."""
        return self.ssl_context is not None or bool(self.ca_file or self.cert_file)

    def on(self, base: BrokerSettings) -> BrokerSettings:
        """These options applied to ``base``: its nodes when we have none, our options first."""
        merged = BrokerSettings.__new__(BrokerSettings)
        merged.nodes = self.nodes or base.nodes
        tls_from = self if self.uses_tls_settings else base
        merged.ssl_context = tls_from.ssl_context
        merged.ca_file = tls_from.ca_file
        merged.cert_file = tls_from.cert_file
        merged.key_file = tls_from.key_file
        merged.external_auth = self.external_auth or base.external_auth
        merged.connection_name = self.connection_name or base.connection_name
        merged.service_name = self.service_name or base.service_name
        return merged

    def _key(self) -> tuple[object, ...]:
        # pika parameters and SSL contexts compare by identity: the same objects
        # give the same key, so publish_domain_event keeps reusing one publisher.
        return (
            tuple(node if isinstance(node, str) else id(node) for node in self.nodes),
            id(self.ssl_context) if self.ssl_context is not None else None,
            self.ca_file,
            self.cert_file,
            self.key_file,
            self.external_auth,
            self.connection_name,
            self.service_name,
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            # 3.x kept the URL itself in ``connection_settings``; code that
            # compares it with a URL keeps working.
            try:
                other = BrokerSettings(other)
            except ValueError:
                return False
        if not isinstance(other, BrokerSettings):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        # Never the password: reprs end up in logs and tracebacks.
        options = [repr(mask_url(self)) if self.nodes else "''"]
        for name in ("ca_file", "cert_file", "key_file", "connection_name", "service_name"):
            value = getattr(self, name)
            if value:
                options.append(f"{name}={value!r}")
        if self.ssl_context is not None:
            options.append("ssl_context=<SSLContext>")
        if self.external_auth:
            options.append("external_auth=True")
        return f"BrokerSettings({', '.join(options)})"


#: What ``connection_settings`` may be (``None``: no broker; ``''``: the default broker).
ConnectionSettings: TypeAlias = Node | Sequence[Node] | BrokerSettings | None


def nodes_of(url: object) -> tuple[Node, ...]:
    if isinstance(url, str):
        return tuple(split_urls(url)) if url.strip() else ()
    if isinstance(url, Parameters):
        return (url,)
    if isinstance(url, (list, tuple)):
        nodes: list[Node] = []
        for item in url:
            if not isinstance(item, (str, Parameters)):
                raise TypeError(
                    "a list of nodes holds AMQP URLs or pika ConnectionParameters, "
                    f"not {type(item).__name__}"
                )
            nodes.extend(split_urls(item) if isinstance(item, str) else [item])
        if not nodes:
            raise ValueError("connection_settings holds no AMQP URL")
        return tuple(nodes)
    raise TypeError(
        "BrokerSettings takes an AMQP URL, a list of them or pika ConnectionParameters, "
        f"not {type(url).__name__}"
    )


def mask_url(url: object) -> str:
    """``url`` (or connection settings) with the password replaced by ``***``, for logs and errors.

    >>> mask_url("amqp://app:s3cret@rabbit:5672/%2F")
    'amqp://app:***@rabbit:5672/%2F'

    The user information is everything between ``scheme://`` and the last
    ``@``, so a password holding ``/``, ``:``, ``@``, ``#`` or ``?`` is masked
    whole. Without a scheme, everything before the last ``@`` is masked.
    """
    if url is None:
        return "<no broker>"
    if isinstance(url, BrokerSettings):
        return ", ".join(mask_url(node) for node in url.nodes) or "<the default broker>"
    if isinstance(url, Parameters):
        return describe_parameters(url)
    if isinstance(url, (list, tuple)):
        return ", ".join(mask_url(node) for node in url)
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    return mask_text(url)
