"""Send and receive domain events via RabbitMQ topic exchanges."""

from .errors import (
    AccessRefused,
    BrokerUnavailable,
    ConfirmTimeout,
    DomainEventBrokerError,
    EventNotSerializable,
    EventRefused,
    EventTooLarge,
    InvalidEvent,
    InvalidRoutingKey,
    PluginMissing,
    PublishError,
    Retry,
    TopologyMismatch,
)
from .events import DomainEvent
from .publisher import Publisher, publish_domain_event
from .replay import DISCARD, LEAVE, RETRY, replay_all, replay_event
from .settings import BrokerSettings
from .subscriber import Subscriber

__version__ = "4.0.0.dev0"

__all__ = [
    "DISCARD",
    "LEAVE",
    "RETRY",
    "AccessRefused",
    "BrokerSettings",
    "BrokerUnavailable",
    "ConfirmTimeout",
    "DomainEvent",
    "DomainEventBrokerError",
    "EventNotSerializable",
    "EventRefused",
    "EventTooLarge",
    "InvalidEvent",
    "InvalidRoutingKey",
    "PluginMissing",
    "PublishError",
    "Publisher",
    "Retry",
    "Subscriber",
    "TopologyMismatch",
    "publish_domain_event",
    "replay_all",
    "replay_event",
]
