"""Connecting with aio-pika: the same URLs, time-outs and password-free errors as the sync side."""

from __future__ import annotations

import random
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ..connection import (
    BAD_CREDENTIALS,
    CHECK_ADDRESS,
    CONNECT_TIMEOUT,
    NO_VHOST_ACCESS,
    asyncio_connect_arguments,
    cluster_parameters,
    unreachable,
)
from ..errors import BrokerUnavailable
from ..settings import describe_node, mask_url

#: The exceptions that mean "the connection (or its channel) is gone, reconnect".
AIO_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    RuntimeError,  # aio-pika: "Connection closed" / "Channel closed" on a dead transport
)


async def connect(
    connection_settings: object, role: str, timeout: float = CONNECT_TIMEOUT
) -> aio_pika.abc.AbstractConnection:
    """Open a connection to one of the nodes, or raise :class:`BrokerUnavailable`.

    ``connection_settings`` is anything the sync side takes (URLs, pika
    parameters, :class:`~domain_event_broker.settings.BrokerSettings` with TLS
    or EXTERNAL login): both sides connect from the same settings. With several
    nodes each is tried in turn, starting at a random one. The error names host,
    port and vhost, never the password.
    """
    nodes = asyncio_connect_arguments(connection_settings, f"asyncio {role}")
    start = random.randrange(len(nodes))
    nodes = nodes[start:] + nodes[:start]
    last: BaseException | None = None
    for node in nodes:
        try:
            connection: aio_pika.abc.AbstractConnection = await aio_pika.connect(
                timeout=timeout, **node
            )
            return connection
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as error:
            last = error
    assert last is not None
    raise explain(connection_settings, last) from None


def explain(connection_settings: object, error: BaseException) -> BrokerUnavailable:
    where = "; ".join(
        describe_node(parameters)
        for parameters in cluster_parameters(connection_settings, "asyncio")
    )
    if isinstance(error, aiormq.exceptions.ProbableAuthenticationError):
        reason = BAD_CREDENTIALS
    elif isinstance(
        error, (aiormq.exceptions.ConnectionNotAllowed, aiormq.exceptions.ChannelAccessRefused)
    ):
        reason = NO_VHOST_ACCESS
    elif isinstance(error, ConnectionRefusedError):
        reason = f"connection refused; {CHECK_ADDRESS}"
    elif isinstance(error, TimeoutError):
        reason = f"timed out; {CHECK_ADDRESS}"
    else:
        # aiormq's texts may quote the URL it was given: name the type only.
        reason = f"{type(error).__name__}; {CHECK_ADDRESS}"
    return unreachable(mask_url(connection_settings), where, reason)


def server_properties(connection: aio_pika.abc.AbstractConnection) -> Any:
    """What the node said about itself when ``connection`` opened (``version``...), or None."""
    transport = connection.transport
    return None if transport is None else transport.connection.server_properties
