"""The library's settings, and which broker ``connection_settings`` stands for.

``BROKER`` is the default AMQP URL. Existing code changes it at start-up
(``settings.BROKER = ...``), so it is read at call time, never copied at import.

Which broker ``connection_settings=''`` (the default) means, first match wins:

1. the Django setting ``DOMAIN_EVENT_BROKER`` (``None`` included) when the
   ``domain_event_broker.django`` app is installed;
2. ``settings.BROKER`` when code assigned it a value other than its default;
3. the environment variable ``$DOMAIN_EVENT_BROKER`` when set and not empty;
4. the built-in local broker, ``amqp://guest:guest@localhost:5672/%2F``.

An explicit ``connection_settings`` argument always wins over all of them:

>>> resolve_broker("amqp://app:s3cret@rabbit/%2F")
BrokerSettings('amqp://app:***@rabbit/%2F')
>>> resolve_broker(None) is None  # no broker: nothing is sent
True

What a broker's settings are (:class:`BrokerSettings`), how a URL is read and
shown without its password, and the command-line options live in
:mod:`.config`; their names stay importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pika.connection import Parameters

from .config.arguments import BrokerArgumentParser, add_broker_arguments, broker_from_arguments
from .config.broker import BrokerSettings, ConnectionSettings, Node, mask_url
from .config.urls import describe_node, describe_parameters, split_urls
from .core.defaults import PUBLISH_TIMEOUT

__all__ = [
    "BROKER",
    "CONNECTION_NAME",
    "DEFAULT",
    "ENVIRONMENT_VARIABLE",
    "NOT_SET",
    "PUBLISH_TIMEOUT",
    "BrokerArgumentParser",
    "BrokerSettings",
    "ConnectionSettings",
    "Node",
    "add_broker_arguments",
    "broker_from_arguments",
    "default_broker",
    "describe_node",
    "describe_parameters",
    "framework_default",
    "mask_url",
    "resolve_broker",
    "resolve_url",
    "split_urls",
]

#: Sentinel of releases 2.x: "use the default broker". ``''`` means the same.
DEFAULT = object()

#: The connection settings used for connecting to the RabbitMQ broker.
#: Default settings are for a local installation of RabbitMQ.
BROKER: str | None = "amqp://guest:guest@localhost:5672/%2F"
_BUILT_IN_BROKER = "amqp://guest:guest@localhost:5672/%2F"
# PUBLISH_TIMEOUT (imported above): seconds a publish waits for the broker's
# confirm, read at call time, so that code may set it here at start-up.

#: The environment variable that names the default broker (see the module docstring).
ENVIRONMENT_VARIABLE = "DOMAIN_EVENT_BROKER"

#: The connection name RabbitMQ shows for our connections (management UI,
#: ``rabbitmqctl list_connections client_properties``). ``None``: one of our own
#: saying what the connection is for, the host and the pid.
CONNECTION_NAME: str | None = None


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
