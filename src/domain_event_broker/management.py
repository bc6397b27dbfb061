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

from .connection import ROLE_PROPERTY, SERVICE_PROPERTY, cluster_parameters
from .core.drift import Broker, ExchangeState, QueueState
from .core.event_map import ConnectionRecord, ConsumerRecord
from .core.inventory import BindingRecord, QueueRecord
from .core.ordered_inventory import ExchangeBindingRecord
from .core.partitions import consumer_is_active
from .core.rabbitmq import RabbitMQVersion
from .errors import BrokerUnavailable
from .settings import BrokerSettings

#: Seconds the management API has to answer one request.
MANAGEMENT_TIMEOUT = 10.0
#: Where the management API listens by default: the AMQP port plus this.
MANAGEMENT_PORT_OFFSET = 10000


#: The figures of a queue the console reads (a smaller answer: 200 subscribers' queues).
QUEUE_COLUMNS = ",".join(
    (
        "name",
        "type",
        "arguments",
        "effective_policy_definition",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "message_stats.publish_details.rate",
        "message_stats.deliver_get_details.rate",
    )
)


#: What the console reads of a channel: its connection and how fast it publishes.
CHANNEL_COLUMNS = "connection_details.name,message_stats.publish_details.rate"


def queue_record(row: dict[str, Any]) -> QueueRecord:
    return QueueRecord(
        name=row["name"],
        ready=int(row.get("messages_ready") or 0),
        unacked=int(row.get("messages_unacknowledged") or 0),
        consumers=int(row.get("consumers") or 0),
    )


def queue_rates(row: dict[str, Any]) -> tuple[float, float]:
    """(events in, events delivered) a second, as the broker's statistics say."""
    stats = row.get("message_stats") or {}
    rate_in = (stats.get("publish_details") or {}).get("rate") or 0.0
    rate_out = (stats.get("deliver_get_details") or {}).get("rate") or 0.0
    return float(rate_in), float(rate_out)


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
        return [queue_record(row) for row in self._get("queues")]

    def queue_rows(self) -> list[dict[str, Any]]:
        """Every queue with its figures, rates and arguments, as the API lists it."""
        return self._get("queues", QUEUE_COLUMNS)

    def consumers(self) -> list[ConsumerRecord]:
        return [
            ConsumerRecord(
                str(_details(row, "queue").get("name", "")),
                str(_details(row, "channel_details").get("connection_name", "")),
                consumer_is_active(row),
            )
            for row in self._get("consumers")
        ]

    def connections(self) -> list[ConnectionRecord]:
        rows = self._get_path(f"vhosts/{self._vhost_path}/connections", "connections")
        records = []
        for row in rows:
            properties = row.get("client_properties") or {}
            records.append(
                ConnectionRecord(
                    name=str(row.get("name", "")),
                    service=str(properties.get(SERVICE_PROPERTY, "")),
                    role=str(properties.get(ROLE_PROPERTY, "")),
                    product=str(properties.get("product", "")),
                )
            )
        return records

    def publish_rates(self) -> dict[str, float]:
        """Events a second each connection publishes (its channels' summed), by its name."""
        rates: dict[str, float] = {}
        for row in self._get_path(f"vhosts/{self._vhost_path}/channels?columns={CHANNEL_COLUMNS}"):
            name = str(_details(row, "connection_details").get("name", ""))
            stats = (row.get("message_stats") or {}).get("publish_details") or {}
            rates[name] = rates.get(name, 0.0) + float(stats.get("rate") or 0.0)
        return rates

    def bindings(self) -> list[BindingRecord]:
        return self.all_bindings()[0]

    def all_bindings(self) -> tuple[list[BindingRecord], list[ExchangeBindingRecord]]:
        """The bindings to queues, and those to exchanges (an ordered subscriber's)."""
        to_queues, to_exchanges = [], []
        for row in self._get("bindings"):
            if row.get("destination_type") == "queue":
                to_queues.append(
                    BindingRecord(row["source"], row["destination"], row["routing_key"])
                )
            elif row.get("destination_type") == "exchange":
                to_exchanges.append(
                    ExchangeBindingRecord(row["source"], row["destination"], row["routing_key"])
                )
        return to_queues, to_exchanges

    def queue_arguments(self, name: str) -> dict[str, Any]:
        """The arguments queue ``name`` was declared with (AMQP cannot read them back)."""
        for row in self._get("queues"):
            if row["name"] == name:
                return dict(row.get("arguments") or {})
        return {}

    def exchanges(self) -> list[str]:
        return [row["name"] for row in self._get("exchanges")]

    def broker(self) -> Broker:
        """The vhost's queues (arguments, events held), exchanges and bindings, for drift."""
        queues = {
            row["name"]: QueueState(
                durable=bool(row.get("durable")),
                exclusive=bool(row.get("exclusive")),
                auto_delete=bool(row.get("auto_delete")),
                arguments=row.get("arguments") or {},
                messages=int(row.get("messages") or 0),
            )
            for row in self._get("queues")
        }
        exchanges = {
            row["name"]: ExchangeState(
                row.get("type", ""), bool(row.get("durable")), bool(row.get("auto_delete"))
            )
            for row in self._get("exchanges")
        }
        bindings = frozenset(
            (binding.source, binding.queue, binding.routing_key) for binding in self.bindings()
        )
        return Broker(queues, exchanges, bindings)

    def rabbitmq_version(self) -> RabbitMQVersion:
        """The version the node reports (3.x rules when it reports none)."""
        overview: Any = self._get_path("overview")
        version = overview.get("rabbitmq_version") if isinstance(overview, dict) else None
        return RabbitMQVersion.reported({"version": version})

    def queue(self, name: str) -> dict[str, Any]:
        """The queue's row, with its consumers (``consumer_details``)."""
        row: Any = self._get_path(f"queues/{self._vhost_path}/{_quoted(name)}", f"queue {name!r}")
        return dict(row)

    def connection_names(self) -> dict[str, str]:
        """The name each client gave its connection, by the broker's name of the connection."""
        rows = self._get_path(f"vhosts/{self._vhost_path}/connections")
        named = {str(row.get("name")): (row.get("client_properties") or {}) for row in rows}
        return {
            peer: str(properties["connection_name"])
            for peer, properties in named.items()
            if properties.get("connection_name")
        }

    @property
    def _vhost_path(self) -> str:
        return _quoted(self.vhost)

    def _get(self, collection: str, columns: str = "") -> list[dict[str, Any]]:
        query = f"?columns={columns}" if columns else ""
        return self._get_path(f"{collection}/{self._vhost_path}{query}")

    def _get_path(self, path: str, what: str | None = None) -> list[dict[str, Any]]:
        # "queues/<vhost>?...", "vhosts/<vhost>/channels?...": what is listed, for the error.
        parts = path.split("?")[0].split("/")
        listed = parts[2] if path.startswith("vhosts/") and len(parts) > 2 else parts[0]
        collection = what or listed
        request = urllib.request.Request(
            f"{self.base}/api/{path}", headers={"Authorization": self._authorization}
        )
        try:
            with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as reply:
                rows: list[dict[str, Any]] = json.load(reply)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise BrokerUnavailable(
                    f"RabbitMQ's management API at {self.base} has no {collection} in vhost "
                    f"{self.vhost!r} (HTTP 404)"
                ) from None
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


def _details(row: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object of a row; the API answers ``[]`` for one whose channel is closing."""
    value = row.get(key)
    return value if isinstance(value, dict) else {}


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")
