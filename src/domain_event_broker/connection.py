"""Connecting to RabbitMQ: URL parameters, clear connection errors, backoff."""

from __future__ import annotations

import logging
import os
import random
import socket
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingConnection

from .errors import BrokerUnavailable
from .settings import describe_url, mask_url, split_urls

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection and for the AMQP handshake, unless the URL says otherwise.
CONNECT_TIMEOUT = 5.0

#: The exceptions that mean "the connection (or its channel) is gone, reconnect".
CONNECTION_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


def cluster_parameters(url: str, role: str) -> list[pika.URLParameters]:
    """pika parameters for each node URL in ``url`` (comma-separated for a cluster)."""
    return [connection_parameters(node_url, role) for node_url in split_urls(url)]


def connection_parameters(url: str, role: str) -> pika.URLParameters:
    """pika parameters for one node ``url``, with bounded time-outs and a connection name.

    Query options in the URL (``?heartbeat=30&socket_timeout=10``) win over ours.
    """
    try:
        parameters = pika.URLParameters(url)
    except Exception as error:  # pika raises several types for a malformed URL
        raise ValueError(f"not a valid AMQP URL: {mask_url(url)} ({error})") from None
    given = parse_qs(urlsplit(url).query)
    if "socket_timeout" not in given:
        parameters.socket_timeout = CONNECT_TIMEOUT
    if "stack_timeout" not in given:
        parameters.stack_timeout = CONNECT_TIMEOUT * 2
    if "blocked_connection_timeout" not in given:
        # A broker under a resource alarm blocks publishers; do not wait forever.
        parameters.blocked_connection_timeout = 60.0
    parameters.client_properties = {
        "connection_name": f"domain-event-broker {role} {socket.gethostname()} pid={os.getpid()}",
        "product": "domain-event-broker",
    }
    return parameters


def explain_connection_error(url: str, error: BaseException) -> BrokerUnavailable:
    """A :class:`BrokerUnavailable` that says where we tried to connect and what to check."""
    masked = mask_url(url)
    where = "; ".join(describe_url(node_url) for node_url in split_urls(url))
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        reason = "the broker refused the user name or password; check the credentials in the URL"
    elif isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        reason = (
            "the user has no access to this vhost (or the vhost does not exist); "
            "check the vhost in the URL (%2F is the default vhost '/') and its permissions"
        )
    else:
        detail = _root_cause(error)
        reason = f"{detail}; is RabbitMQ running there, and are host and port right?"
    return BrokerUnavailable(f"cannot reach RabbitMQ at {masked} ({where}): {reason}")


def _root_cause(error: BaseException) -> str:
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
    text = str(seen) or type(seen).__name__
    if isinstance(seen, ConnectionRefusedError):
        text = "connection refused"
    elif isinstance(seen, (TimeoutError, socket.timeout)):
        text = "timed out"
    return text


def connect_blocking(url: str, role: str) -> BlockingConnection:
    """Open a blocking connection, or raise :class:`BrokerUnavailable` within bounded time.

    With several node URLs, each is tried in turn (starting at a random one, so
    that clients spread over the cluster).
    """
    parameters = cluster_parameters(url, role)
    start = random.randrange(len(parameters))
    parameters = parameters[start:] + parameters[:start]
    try:
        return BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError) as error:
        raise explain_connection_error(url, error) from None


class Backoff:
    """Capped exponential backoff with full jitter, for reconnect loops.

    >>> backoff = Backoff(initial=0.1, maximum=3.0)
    >>> 0 <= backoff.next_delay() <= 0.1
    True
    """

    def __init__(self, initial: float = 0.1, maximum: float = 3.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        # Jitter keeps many clients that lost the same broker from reconnecting in lockstep.
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
