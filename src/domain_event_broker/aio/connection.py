"""Connecting with aio-pika: the same URLs, time-outs and password-free errors as the sync side."""

from __future__ import annotations

import os
import random
import socket
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from ..connection import CONNECT_TIMEOUT
from ..errors import BrokerUnavailable
from ..settings import describe_url, mask_url, split_urls

#: The exceptions that mean "the connection (or its channel) is gone, reconnect".
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
    aiormq.exceptions.ConnectionClosed,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    RuntimeError,  # aio-pika: "Connection closed" / "Channel closed" on a dead transport
)


def client_properties(role: str) -> dict[str, Any]:
    return {
        "connection_name": f"domain-event-broker asyncio {role} {socket.gethostname()} "
        f"pid={os.getpid()}",
        "product": "domain-event-broker",
    }


async def connect(
    url: str, role: str, timeout: float = CONNECT_TIMEOUT
) -> aio_pika.abc.AbstractConnection:
    """Open a connection to one of the nodes in ``url``, or raise :class:`BrokerUnavailable`.

    With several node URLs each is tried in turn, starting at a random one. The
    error names host, port and vhost, never the password.
    """
    nodes = split_urls(url)
    start = random.randrange(len(nodes))
    nodes = nodes[start:] + nodes[:start]
    last: BaseException | None = None
    for node in nodes:
        try:
            return await aio_pika.connect(
                node, timeout=timeout, client_properties=client_properties(role)
            )
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as error:
            last = error
    assert last is not None
    raise explain(url, last) from None


def explain(url: str, error: BaseException) -> BrokerUnavailable:
    where = "; ".join(describe_url(node) for node in split_urls(url))
    if isinstance(error, aiormq.exceptions.ProbableAuthenticationError):
        reason = "the broker refused the user name or password; check the credentials in the URL"
    elif isinstance(
        error, (aiormq.exceptions.ConnectionNotAllowed, aiormq.exceptions.ChannelAccessRefused)
    ):
        reason = (
            "the user has no access to this vhost (or the vhost does not exist); "
            "check the vhost in the URL (%2F is the default vhost '/') and its permissions"
        )
    elif isinstance(error, ConnectionRefusedError):
        reason = "connection refused; is RabbitMQ running there, and are host and port right?"
    elif isinstance(error, TimeoutError):
        reason = "timed out; is RabbitMQ running there, and are host and port right?"
    else:
        # aiormq's texts may quote the URL it was given: name the type only.
        reason = f"{type(error).__name__}; is RabbitMQ running there, and are host and port right?"
    return BrokerUnavailable(f"cannot reach RabbitMQ at {mask_url(url)} ({where}): {reason}")
