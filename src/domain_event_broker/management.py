"""Reading what a broker holds through RabbitMQ's management API (HTTP), for the CLI.

AMQP cannot list queues; the management plugin (``rabbitmq-plugins enable
rabbitmq_management``) can. The API is asked with the AMQP URL's user and
password, at ``http://<host>:<AMQP port + 10000>`` (15672 for 5672; ``https`` and
15671 for ``amqps://``) unless a management URL is given. Nothing here changes the broker.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .connection import cluster_parameters
from .core.inventory import BindingRecord, QueueRecord
from .errors import BrokerUnavailable
from .settings import BrokerSettings

#: Seconds the management API has to answer one request.
MANAGEMENT_TIMEOUT = 10.0
#: Where the management API listens by default: the AMQP port plus this.
MANAGEMENT_PORT_OFFSET = 10000


class ManagementAPI:
    """The management API of the broker ``url`` points at, for the URL's vhost."""

    def __init__(self, url: BrokerSettings, management_url: str | None = None) -> None:
        parameters = cluster_parameters(url, "management")[0]
        credentials = parameters.credentials
        user = getattr(credentials, "username", "guest")
        password = getattr(credentials, "password", "guest")
        self.vhost: str = parameters.virtual_host
        if management_url:
            self.base = management_url.rstrip("/")
        else:
            # RabbitMQ's own convention: 5672 -> 15672, 5671 (TLS) -> 15671.
            scheme = "https" if parameters.ssl_options is not None else "http"
            self.base = f"{scheme}://{parameters.host}:{parameters.port + MANAGEMENT_PORT_OFFSET}"
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    def queues(self) -> list[QueueRecord]:
        return [
            QueueRecord(
                name=row["name"],
                ready=int(row.get("messages_ready") or 0),
                unacked=int(row.get("messages_unacknowledged") or 0),
                consumers=int(row.get("consumers") or 0),
            )
            for row in self._get("queues")
        ]

    def bindings(self) -> list[BindingRecord]:
        return [
            BindingRecord(row["source"], row["destination"], row["routing_key"])
            for row in self._get("bindings")
            if row.get("destination_type") == "queue"
        ]

    def exchanges(self) -> list[str]:
        return [row["name"] for row in self._get("exchanges")]

    def queue(self, name: str) -> dict[str, Any]:
        """The queue's row, with its consumers (``consumer_details``)."""
        row: dict[str, Any] = self._read(f"queues/{self._vhost()}/{_quoted(name)}", "the queue")
        return row

    def connection_names(self) -> dict[str, str]:
        """The name each client gave its connection, by the broker's name of the connection."""
        rows: list[dict[str, Any]] = self._read(
            f"vhosts/{self._vhost()}/connections", "connections"
        )
        named = {str(row.get("name")): (row.get("client_properties") or {}) for row in rows}
        return {
            peer: str(properties["connection_name"])
            for peer, properties in named.items()
            if properties.get("connection_name")
        }

    def _vhost(self) -> str:
        return _quoted(self.vhost)

    def _get(self, collection: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._read(f"{collection}/{self._vhost()}", collection)
        return rows

    def _read(self, path: str, collection: str) -> Any:
        request = urllib.request.Request(
            f"{self.base}/api/{path}",
            headers={"Authorization": self._authorization},
        )
        try:
            with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as reply:
                rows = json.load(reply)
        except urllib.error.HTTPError as error:
            raise BrokerUnavailable(
                f"RabbitMQ's management API at {self.base} refused to list {collection} of "
                f"vhost {self.vhost!r} (HTTP {error.code}): the user needs the 'monitoring' "
                "or 'management' tag (rabbitmqctl set_user_tags <user> monitoring)"
            ) from None
        except (OSError, ValueError) as error:
            raise BrokerUnavailable(
                f"cannot read RabbitMQ's management API at {self.base} ({error}): enable it "
                "with rabbitmq-plugins enable rabbitmq_management, or give --management-url"
            ) from None
        return rows


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")
