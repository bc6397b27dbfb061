"""Where the broker is, and how its address is shown to people.

``BROKER`` is the default AMQP URL. Existing code changes it at start-up
(``settings.BROKER = ...``), so it is read at call time, never copied at import.

Which broker ``connection_settings=''`` (the default) means, first match wins:

1. the Django setting ``DOMAIN_EVENT_BROKER`` (``None`` included) when the
   ``domain_event_broker.django`` app is installed;
2. ``settings.BROKER`` when code assigned it a value other than its default;
3. the environment variable ``$DOMAIN_EVENT_BROKER`` when set and not empty;
4. the built-in local broker, ``amqp://guest:guest@localhost:5672/%2F``.

An explicit ``connection_settings`` argument always wins over all of them.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from pika.connection import Parameters

if TYPE_CHECKING:
    import ssl

#: Sentinel of releases 2.x: "use the default broker". ``''`` means the same.
DEFAULT = object()

#: The connection settings used for connecting to the RabbitMQ broker.
#: Default settings are for a local installation of RabbitMQ.
BROKER: str | None = "amqp://guest:guest@localhost:5672/%2F"
_BUILT_IN_BROKER = "amqp://guest:guest@localhost:5672/%2F"
#: Seconds a publish waits for the broker's confirm (read at call time).
PUBLISH_TIMEOUT = 30.0

#: The environment variable that names the default broker (see the module docstring).
ENVIRONMENT_VARIABLE = "DOMAIN_EVENT_BROKER"

#: The connection name RabbitMQ shows for our connections (management UI,
#: ``rabbitmqctl list_connections client_properties``). ``None``: one of our own
#: saying what the connection is for, the host and the pid.
CONNECTION_NAME: str | None = None

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
    """

    __slots__ = (
        "ca_file",
        "cert_file",
        "connection_name",
        "external_auth",
        "key_file",
        "nodes",
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
    ) -> None:
        #: The nodes to connect to, tried in turn; empty for "the default broker".
        self.nodes: tuple[Node, ...] = _nodes_of(url)
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
        for name in ("ca_file", "cert_file", "key_file", "connection_name"):
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

# Set by the Django app when it is ready: returns its settings as connection
# settings, or NOT_SET when the project sets none of them.
NOT_SET = object()
framework_default: Callable[[], object] | None = None


def resolve_broker(connection_settings: object) -> BrokerSettings | None:
    """The broker that ``connection_settings`` stands for; ``None`` for "no broker".

    ``''`` (and the old ``DEFAULT`` sentinel) mean the default broker; see the
    module docstring for where it comes from.
    """
    return _resolve(connection_settings, default_broker)


#: The name of releases before connection settings took more than a URL.
resolve_url = resolve_broker


def default_broker() -> BrokerSettings | None:
    """The default broker: the Django setting, ``BROKER``, ``$DOMAIN_EVENT_BROKER``, built-in."""
    hook = framework_default
    if hook is not None:
        value = hook()
        if value is not NOT_SET:
            return _resolve(value, _assigned_or_environment)
    return _assigned_or_environment()


def _assigned_or_environment() -> BrokerSettings | None:
    if isinstance(BROKER, str) and BROKER == _BUILT_IN_BROKER:
        return _environment_or_built_in()
    return _resolve(BROKER, _environment_or_built_in)  # code assigned it (None included)


def _environment_or_built_in() -> BrokerSettings:
    return BrokerSettings(os.environ.get(ENVIRONMENT_VARIABLE, "").strip() or _BUILT_IN_BROKER)


def _resolve(value: object, default: Callable[[], BrokerSettings | None]) -> BrokerSettings | None:
    if value is None:
        return None
    if value is DEFAULT or (isinstance(value, str) and not value.strip()):
        return default()
    if isinstance(value, BrokerSettings):
        given = value
    elif type(value) is str:
        # Read once per URL: publish_domain_event resolves its URL on every call.
        remembered = _SETTINGS_OF_URL.get(value)
        if remembered is None:
            if len(_SETTINGS_OF_URL) >= _MAX_REMEMBERED_URLS:
                _SETTINGS_OF_URL.clear()
            remembered = _SETTINGS_OF_URL[value] = BrokerSettings(value)
        given = remembered
    elif isinstance(value, (str, Parameters, list, tuple)):
        given = BrokerSettings(value)
    else:
        raise TypeError(
            "connection_settings must be an AMQP URL, a list of them, pika ConnectionParameters, "
            f"a BrokerSettings, '' for the default broker or None for no broker, "
            f"not {type(value).__name__}"
        )
    if given.nodes:
        return given
    base = default()
    return None if base is None else given.on(base)


#: The settings each URL stood for (a URL's meaning never changes; the default's may).
_SETTINGS_OF_URL: dict[str, BrokerSettings] = {}
_MAX_REMEMBERED_URLS = 64


def _nodes_of(url: object) -> tuple[Node, ...]:
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


# Nodes are split only where the next one starts: a ',' inside a password stays there.
_NODE_SEPARATOR = re.compile(r",\s*(?=amqps?://)", re.IGNORECASE)
_NODE_START = re.compile(r"(?=,\s*amqps?://)", re.IGNORECASE)
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_SSL_OPTIONS = re.compile(r"(ssl_options=)[^&#]*")


def split_urls(url: str) -> list[str]:
    """The URLs of a cluster's nodes: ``connection_settings`` may list several, comma-separated.

    >>> split_urls("amqp://rabbit-1/%2F, amqp://rabbit-2/%2F")
    ['amqp://rabbit-1/%2F', 'amqp://rabbit-2/%2F']
    """
    urls = [part.strip() for part in _NODE_SEPARATOR.split(url) if part.strip()]
    if not urls:
        raise ValueError("connection_settings holds no AMQP URL")
    return urls


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
    # Each part after the first keeps its leading comma.
    return "".join(_mask_one(part) for part in _NODE_START.split(url))


def _mask_one(text: str) -> str:
    lead = ""
    if text.startswith(","):
        lead, text = ",", text[1:]
    scheme = _SCHEME.match(text)
    head = scheme.group(0) if scheme else ""
    rest = text[len(head) :]
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        if head and ":" not in userinfo:
            shown = userinfo  # a user name and no password
        elif head:
            shown = userinfo.split(":", 1)[0] + ":***"
        else:
            shown = "***"  # no scheme: we cannot tell the user from the password
        rest = f"{shown}@{rest[at + 1 :]}"
    # A TLS key's password may sit in pika's ssl_options query.
    return lead + head + _SSL_OPTIONS.sub(r"\1***", rest)


def describe_parameters(parameters: Parameters) -> str:
    """pika parameters in words, without the credentials."""
    scheme = "amqps" if parameters.ssl_options is not None else "amqp"
    vhost = parameters.virtual_host
    return f"{scheme}://{parameters.host}:{parameters.port}/{'%2F' if vhost == '/' else vhost}"


def describe_node(parameters: Parameters) -> str:
    """Host, port and vhost of parsed node parameters in words, for error messages."""
    tls = " (TLS)" if parameters.ssl_options is not None else ""
    return f"host {parameters.host}, port {parameters.port}{tls}, vhost {parameters.virtual_host!r}"


class BrokerArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors never show a URL's password.

    argparse echoes what it could not use (``unrecognized arguments: --url
    amqp://app:s3cret@...``) when an option is misplaced; every word of such a
    message that holds ``://`` is masked. Subcommand parsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        masked = " ".join(mask_url(word) if "://" in word else word for word in message.split(" "))
        super().error(masked)


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and the TLS options, shared by ``domain-events`` and ``domain-events-relay``."""
    parser.add_argument(
        "--url",
        help="AMQP URL of the broker; several, comma-separated, for a cluster "
        "(default: $DOMAIN_EVENT_BROKER, else the local broker)",
    )
    tls = parser.add_argument_group("TLS (amqps:// URLs)")
    tls.add_argument("--ca-file", help="the CA that signed the broker's certificate (PEM)")
    tls.add_argument(
        "--cert-file", help="a client certificate (PEM), with its key unless --key-file"
    )
    tls.add_argument("--key-file", help="the client certificate's private key (PEM)")
    tls.add_argument(
        "--external-auth",
        action="store_true",
        help="log in with the client certificate (EXTERNAL) instead of a user name and password",
    )


def broker_from_arguments(arguments: argparse.Namespace) -> BrokerSettings:
    """The broker that parsed :func:`add_broker_arguments` options name (``''``: the default)."""
    return BrokerSettings(
        arguments.url or "",
        ca_file=arguments.ca_file,
        cert_file=arguments.cert_file,
        key_file=arguments.key_file,
        external_auth=arguments.external_auth,
    )
