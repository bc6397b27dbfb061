"""AMQP URLs: a cluster's nodes in one string, reading a URL, showing one without its password.

Nothing here connects; a password never reaches a log line or an exception
through these functions.
"""

from __future__ import annotations

import re

import pika
from pika.connection import Parameters

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


def mask_text(url: str) -> str:
    """An AMQP URL (or several, comma-separated) with every password replaced by ``***``."""
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


URL_FORM = (
    "expected amqp://user:password@host:port/vhost (or amqps://), with any of "
    "/ : @ # ? % , in the user name or password written percent-encoded (%2F, %3A, %40, ...)"
)


def parse_url(url: str) -> Parameters:
    # A URL we cannot read is shown as its scheme only: without the '@' that
    # ends the user information, any part of it may be the password.
    if not looks_like_amqp(url):
        raise ValueError(f"not an AMQP URL (it must start with amqp:// or amqps://); {URL_FORM}")
    hidden = url.split("://", 1)[0] + "://***"
    userinfo = url.split("://", 1)[1].rpartition("@")[0]
    if any(special in userinfo for special in "/?#"):
        # pika would end the host part there and read the password as a port,
        # or worse, connect somewhere else with half of it.
        raise ValueError(
            f"not a valid AMQP URL: {hidden}: its user name or password holds '/', '?' or '#'; "
            f"{URL_FORM}"
        )
    try:
        parameters = pika.URLParameters(url)
    except Exception:  # pika raises several types
        # pika's own text may quote the password ("Port could not be cast to
        # integer value as '<password>'"): never pass it on.
        raise ValueError(f"not a valid AMQP URL: {hidden}; {URL_FORM}") from None
    return parameters


def looks_like_amqp(url: str) -> bool:
    return url.lower().startswith(("amqp://", "amqps://"))
