"""Connecting to RabbitMQ with pika: node parameters (URLs, pika parameters, TLS), clear errors.

Query options in a URL win over our time-outs, and every connection is named:

>>> parameters = connection_parameters("amqp://app:pw@rabbit:5673/shop?heartbeat=30", "publisher")
>>> parameters.host, parameters.port, parameters.virtual_host, parameters.heartbeat
('rabbit', 5673, 'shop', 30)
>>> parameters.client_properties["connection_name"].startswith("domain-event-broker publisher")
True

When to try again after a failure is the core's
:class:`~domain_event_broker.core.supervisor.Supervisor` (``Backoff`` stays importable here).
"""

from __future__ import annotations

import copy
import logging
import os
import random
import socket
import ssl
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pika
import pika.credentials
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection
from pika.connection import Parameters

from . import settings
from .config.broker import BrokerSettings, Node, mask_url
from .config.urls import describe_node, parse_url
from .core.defaults import CONNECT_TIMEOUT
from .core.supervisor import Backoff
from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

#: The environment variable naming the service this process is (see ``service_name``).
SERVICE_VARIABLE = "DOMAIN_EVENT_BROKER_SERVICE"
#: Client properties of our connections: the service, and what the connection is for
#: (publisher, subscriber, ...), read back by ``domain-events console``.
SERVICE_PROPERTY = "service"
ROLE_PROPERTY = "domain-event-broker-role"

#: The exceptions that mean "the connection (or its channel) is gone, reconnect".
CONNECTION_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


def as_broker(connection_settings: object) -> BrokerSettings:
    """``connection_settings`` that name a broker, as :class:`BrokerSettings`.

    ``''`` is the default broker; ``None`` (no broker) is refused here: callers
    that connect have checked for it.
    """
    broker = settings.resolve_broker(connection_settings)
    if broker is None:
        raise ValueError("no broker configured (connection settings None): nothing to connect to")
    return broker


def ssl_context_of(connection_settings: object) -> ssl.SSLContext | None:
    """The TLS context the settings ask for, or ``None`` (then ``amqps://`` uses the system's CAs).

    For the asyncio side too: ``aio_pika.connect_robust(url, ssl_context=...)``.
    """
    broker = as_broker(connection_settings)
    if broker.ssl_context is not None:
        return broker.ssl_context
    if not broker.uses_tls_settings:
        return None
    try:
        context = ssl.create_default_context(cafile=broker.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"cannot load the CA file {broker.ca_file}: {error}") from None
    if broker.cert_file:
        try:
            context.load_cert_chain(broker.cert_file, broker.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(
                f"cannot load the client certificate {broker.cert_file}"
                f"{f' with key {broker.key_file}' if broker.key_file else ''}: {error}"
            ) from None
    return context


def cluster_parameters(connection_settings: object, role: str) -> list[Parameters]:
    """pika parameters for each node of the broker, in the order given.

    ``role`` (publisher, subscriber, ...) goes into our default connection name.
    """
    broker = as_broker(connection_settings)
    context = ssl_context_of(broker)
    return [_node_parameters(node, broker, context, role) for node in broker.nodes]


def connection_parameters(url: str, role: str) -> Parameters:
    """pika parameters for one node ``url``, with bounded time-outs and a connection name.

    Query options in the URL (``?heartbeat=30&socket_timeout=10``) win over ours.
    """
    return cluster_parameters(BrokerSettings(url), role)[0]


def _node_parameters(
    node: Node, broker: BrokerSettings, context: ssl.SSLContext | None, role: str
) -> Parameters:
    parameters: Parameters
    if isinstance(node, str):
        parameters = parse_url(node)
        given = parse_qs(urlsplit(node).query)
        if "socket_timeout" not in given:
            parameters.socket_timeout = CONNECT_TIMEOUT
        if "stack_timeout" not in given:
            parameters.stack_timeout = CONNECT_TIMEOUT * 2
        if "blocked_connection_timeout" not in given:
            # A broker under a resource alarm blocks publishers; do not wait forever.
            parameters.blocked_connection_timeout = 60.0
    else:
        # The caller's own object stays as it was: we add TLS and a name to a copy.
        parameters = copy.copy(node)
    if context is not None:
        if isinstance(node, str) and parameters.ssl_options is None:
            raise ValueError(
                f"TLS settings were given for {mask_url(node)}: use an amqps:// URL "
                "(port 5671 unless the URL names another)"
            )
        parameters.ssl_options = pika.SSLOptions(context)  # checks the host name
    if broker.external_auth:
        if parameters.ssl_options is None:
            raise ValueError(
                f"EXTERNAL login needs TLS with a client certificate: {mask_url(node)} "
                "is not an amqps:// URL"
            )
        parameters.credentials = pika.credentials.ExternalCredentials()
    properties = dict(parameters.client_properties or {})
    # A name given in the URL (?client_properties=...) or in pika parameters wins.
    properties.setdefault("connection_name", _connection_name(broker, role))
    properties.setdefault("product", "domain-event-broker")
    properties.setdefault(SERVICE_PROPERTY, service_name(broker))
    properties.setdefault(ROLE_PROPERTY, role)
    parameters.client_properties = properties
    return parameters


def service_name(broker: BrokerSettings) -> str:
    """The service a connection belongs to: the setting, ``$DOMAIN_EVENT_BROKER_SERVICE``,
    else the program's name."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return broker.service_name or os.environ.get(SERVICE_VARIABLE) or program or "python"


def _connection_name(broker: BrokerSettings, role: str) -> str:
    name = broker.connection_name or settings.CONNECTION_NAME
    return name or f"domain-event-broker {role} {socket.gethostname()} pid={os.getpid()}"


def asyncio_connect_arguments(connection_settings: object, role: str) -> list[dict[str, Any]]:
    """Keyword arguments of ``aio_pika.connect_robust(**arguments)``, one dict per node.

    The asyncio side builds its connections from the same settings (URL,
    cluster, pika parameters, TLS, EXTERNAL login, connection name) this way.
    """
    nodes = []
    for parameters in cluster_parameters(connection_settings, role):
        credentials = parameters.credentials
        tls = parameters.ssl_options
        arguments: dict[str, Any] = {
            "host": parameters.host,
            "port": parameters.port,
            "virtualhost": parameters.virtual_host,
            "ssl": tls is not None,
            "client_properties": dict(parameters.client_properties or {}),
        }
        if tls is not None:
            arguments["ssl_context"] = tls.context
        if isinstance(credentials, pika.credentials.PlainCredentials):
            arguments.update(login=credentials.username, password=credentials.password)
        else:  # EXTERNAL: the client certificate says who we are
            arguments.update(login="", password="", auth="external")
        if parameters.heartbeat is not None:
            arguments["heartbeat"] = parameters.heartbeat
        nodes.append(arguments)
    return nodes


#: Why a connection failed, in the words both the sync and asyncio sides use.
BAD_CREDENTIALS = "the broker refused the user name or password; check the credentials in the URL"
NO_VHOST_ACCESS = (
    "the user has no access to this vhost (or the vhost does not exist); "
    "check the vhost in the URL (%2F is the default vhost '/') and its permissions"
)
CHECK_ADDRESS = "is RabbitMQ running there, and are host and port right?"


def unreachable(masked_url: str, where: str, reason: str) -> BrokerUnavailable:
    """The error for a broker we could not connect to: where we tried, why, what to check."""
    return BrokerUnavailable(f"cannot reach RabbitMQ at {masked_url} ({where}): {reason}")


def explain_connection_error(
    connection_settings: object, error: BaseException
) -> BrokerUnavailable:
    """A :class:`BrokerUnavailable` that says where we tried to connect and what to check."""
    broker = as_broker(connection_settings)
    masked = mask_url(broker)
    where = "; ".join(describe_node(parameters) for parameters in _described_nodes(broker))
    cause = _innermost(error)
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        reason = (
            "the broker refused the client certificate's user; a user named after the "
            "certificate's subject must exist and have access to the vhost"
            if broker.external_auth
            else BAD_CREDENTIALS
        )
    elif isinstance(error, pika.exceptions.AuthenticationError):
        reason = (
            f"the broker does not offer the {error} login mechanism; for EXTERNAL (client "
            "certificate) login enable the rabbitmq_auth_mechanism_ssl plugin and add EXTERNAL "
            "to auth_mechanisms"
        )
    elif isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        reason = NO_VHOST_ACCESS
    elif isinstance(cause, ssl.SSLCertVerificationError):
        reason = (
            f"TLS: the broker's certificate was not accepted ({cause.verify_message}); check "
            "ca_file (the CA that signed the broker's certificate) and that the host name in the "
            "URL is one the certificate names"
        )
    elif isinstance(cause, ssl.SSLError):
        reason = (
            f"TLS handshake failed ({_root_cause(error)}); is this port a TLS (amqps) listener, "
            "and does the broker accept the client certificate?"
        )
    else:
        detail = _root_cause(error)
        reason = f"{detail}; {CHECK_ADDRESS}"
    return unreachable(masked, where, reason)


def _described_nodes(broker: BrokerSettings) -> list[Parameters]:
    try:
        return cluster_parameters(broker, "describe")
    except ValueError:  # not reached: the same settings connected moments ago
        return []


def _innermost(error: BaseException) -> BaseException:
    # pika wraps socket errors several layers deep; the innermost one says what happened.
    seen: BaseException = error
    for _ in range(10):
        inner = None
        if seen.args and isinstance(seen.args[0], BaseException):
            inner = seen.args[0]
        elif seen.__cause__ is not None:
            inner = seen.__cause__
        elif getattr(seen, "exception", None) is not None:
            inner = seen.exception  # type: ignore[attr-defined]
        elif getattr(seen, "exceptions", None):
            inner = seen.exceptions[-1]  # type: ignore[attr-defined]
        if inner is None:
            break
        seen = inner
    return seen


def _root_cause(error: BaseException) -> str:
    seen = _innermost(error)
    text = str(seen) or type(seen).__name__
    if isinstance(seen, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(seen, (TimeoutError, socket.timeout)):
        text = "timed out"
    return text


def connect_blocking(connection_settings: object, role: str) -> BlockingConnection:
    """Open a blocking connection, or raise :class:`BrokerUnavailable` within bounded time.

    With several nodes, each is tried in turn (starting at a random one, so
    that clients spread over the cluster).
    """
    broker = as_broker(connection_settings)
    parameters = cluster_parameters(broker, role)
    start = random.randrange(len(parameters))
    parameters = parameters[start:] + parameters[:start]
    try:
        return BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError) as error:
        raise explain_connection_error(broker, error) from None


__all__ = [
    "CONNECTION_LOST",
    "CONNECT_TIMEOUT",
    "Backoff",
    "as_broker",
    "asyncio_connect_arguments",
    "cluster_parameters",
    "connect_blocking",
    "connection_parameters",
    "explain_connection_error",
    "ssl_context_of",
    "unreachable",
]
