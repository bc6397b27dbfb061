"""The broker's command-line options, shared by every command; usage errors without passwords."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .broker import BrokerSettings, mask_url


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
    tls.add_argument(
        "--ca-file",
        help="the CA that signed the broker's certificate (PEM; default: the system's CAs)",
    )
    tls.add_argument(
        "--cert-file",
        help="a client certificate (PEM), with its key unless --key-file (default: none)",
    )
    tls.add_argument(
        "--key-file", help="the client certificate's private key (PEM; default: in --cert-file)"
    )
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
