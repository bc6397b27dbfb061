"""The Django settings that choose the broker: DOMAIN_EVENT_BROKER, _SSL, _CONNECTION_NAME."""

from __future__ import annotations

import pytest
from django.test import override_settings

from domain_event_broker import settings as broker_settings
from domain_event_broker.connection import cluster_parameters
from domain_event_broker.settings import BrokerSettings, resolve_broker


def test_the_django_setting_is_the_default_broker(broker_url: str) -> None:
    broker = resolve_broker("")
    assert broker is not None and broker.nodes == (broker_url,)


def test_the_django_setting_wins_over_broker_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOMAIN_EVENT_BROKER", "amqp://from-env/%2F")
    monkeypatch.setattr(broker_settings, "BROKER", "amqp://from-code/%2F")
    with override_settings(DOMAIN_EVENT_BROKER="amqp://from-django/%2F"):
        assert resolve_broker("").nodes == ("amqp://from-django/%2F",)  # type: ignore[union-attr]
    with override_settings(DOMAIN_EVENT_BROKER=None):
        assert resolve_broker("") is None
    assert resolve_broker("amqp://explicit/%2F").nodes == ("amqp://explicit/%2F",)  # type: ignore[union-attr]


def test_tls_and_connection_name_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    tls = {"ca_file": "/etc/ssl/ca.pem", "cert_file": "/etc/ssl/app.pem", "external_auth": True}
    with override_settings(
        DOMAIN_EVENT_BROKER="amqps://rabbit/%2F",
        DOMAIN_EVENT_BROKER_SSL=tls,
        DOMAIN_EVENT_BROKER_CONNECTION_NAME="shop",
    ):
        broker = resolve_broker("")
    assert broker == BrokerSettings(
        "amqps://rabbit/%2F",
        ca_file="/etc/ssl/ca.pem",
        cert_file="/etc/ssl/app.pem",
        external_auth=True,
        connection_name="shop",
    )


def test_the_connection_name_setting_names_the_connection() -> None:
    with override_settings(DOMAIN_EVENT_BROKER_CONNECTION_NAME="shop"):
        (parameters,) = cluster_parameters("", "publisher")
    assert parameters.client_properties["connection_name"] == "shop"


def test_an_unknown_tls_key_is_refused() -> None:
    with (
        override_settings(DOMAIN_EVENT_BROKER_SSL={"cafile": "/ca.pem"}),
        pytest.raises(ValueError, match="DOMAIN_EVENT_BROKER_SSL has unknown keys"),
    ):
        resolve_broker("")
