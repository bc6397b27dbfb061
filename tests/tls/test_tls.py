"""TLS on a real TLS listener: publish and consume, a wrong CA, client-certificate login."""

from __future__ import annotations

import json
import logging
import ssl
import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme
from rabbit_tls import AMQPS_PORT, CLIENT_USER, TlsNode

from domain_event_broker import (
    BrokerUnavailable,
    DomainEvent,
    Publisher,
    Subscriber,
    publish_domain_event,
)
from domain_event_broker.cli import main as cli_main
from domain_event_broker.connection import connect_blocking
from domain_event_broker.settings import BrokerSettings
from domain_event_broker.sqlalchemy.cli import main as relay_main

pytestmark = pytest.mark.tls

PASSWORD = "Tls-App-S3cret!"


@pytest.fixture(scope="module")
def app_user(tls_node: TlsNode) -> str:
    """A user of our own with a password that no other text holds."""
    tls_node.ctl("add_user", "tls-app", PASSWORD)
    tls_node.ctl("set_permissions", "-p", "/", "tls-app", ".*", ".*", ".*")
    return f"amqps://tls-app:{PASSWORD}@localhost:{AMQPS_PORT}/%2F"


@pytest.fixture
def key() -> str:
    return f"tls.{uuid.uuid4().hex[:8]}"


def leaked(text: str) -> list[str]:
    return [PASSWORD[i : i + 4] for i in range(len(PASSWORD) - 3) if PASSWORD[i : i + 4] in text]


def round_trip(connection_settings: Any, key: str, publish: Any = None) -> list[DomainEvent]:
    """Subscribe to ``key``, publish one event, and return what the subscriber received."""
    received: list[DomainEvent] = []
    subscriber = Subscriber(connection_settings, handle_signals=False)
    name = f"tls-{key}"

    def handle(event: DomainEvent) -> None:
        received.append(event)
        subscriber.stop_consuming()

    subscriber.register(handle, name, [key], auto_delete=True)
    try:
        (publish or publish_domain_event)(
            key, {"over": "tls"}, connection_settings=connection_settings
        )
        subscriber.start_consuming(timeout=10)
    finally:
        subscriber.stop_consuming()
        connection = connect_blocking(connection_settings, "test cleanup")
        try:
            connection.channel().queue_delete(name)
        finally:
            connection.close()
    return received


def named_connections(tls_node: TlsNode, name: str) -> list[dict[str, Any]]:
    return [
        row
        for row in tls_node.connections()
        if ["connection_name", "longstr", name] in row["client_properties"]
    ]


def test_publish_and_consume_over_tls(tls_node: TlsNode, app_user: str, key: str) -> None:
    settings = BrokerSettings(app_user, ca_file=tls_node.files["ca"], connection_name=f"app {key}")
    received = round_trip(settings, key)
    assert [(event.routing_key, event.data) for event in received] == [(key, {"over": "tls"})]
    # The connections were TLS, under our name (the shared publisher's is still open).
    rows = named_connections(tls_node, f"app {key}")
    assert rows and all(row["ssl"] and row["user"] == "tls-app" for row in rows)


def test_an_ssl_context_of_ones_own(tls_node: TlsNode, app_user: str, key: str) -> None:
    context = ssl.create_default_context(cafile=str(tls_node.files["ca"]))
    settings = BrokerSettings(app_user, ssl_context=context)
    publisher = Publisher(settings)
    try:
        received = round_trip(
            settings,
            key,
            lambda k, d, connection_settings: publisher.publish(DomainEvent(k, d).to_json(), k),
        )
    finally:
        publisher.disconnect()
    assert [event.data for event in received] == [{"over": "tls"}]


def test_a_wrong_ca_is_a_clear_error_without_the_password(
    tls_node: TlsNode,
    app_user: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # pika's own logs too, whatever level an in-process `domain-events` run left it at.
    caplog.set_level(logging.DEBUG, logger="pika")
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    settings = BrokerSettings(app_user, ca_file=other_ca)
    for attempt in (
        lambda: publish_domain_event("tls.wrong", {}, connection_settings=settings),
        lambda: Subscriber(settings, handle_signals=False).start_consuming(timeout=1),
    ):
        with pytest.raises(BrokerUnavailable) as raised:
            attempt()
        text = str(raised.value)
        assert "certificate" in text and "ca_file" in text, text
        assert f"localhost, port {AMQPS_PORT} (TLS)" in text
        assert not leaked(text), text
    assert caplog.records, "pika logs the failed handshake"
    assert not leaked(caplog.text), caplog.text


def test_a_plain_url_on_the_tls_port_says_what_to_check(tls_node: TlsNode, app_user: str) -> None:
    url = app_user.replace("amqps://", "amqp://")
    with pytest.raises(BrokerUnavailable) as raised:
        publish_domain_event("tls.plain", {}, connection_settings=url)
    assert not leaked(str(raised.value)), str(raised.value)


def external_settings(tls_node: TlsNode, **options: Any) -> BrokerSettings:
    return BrokerSettings(
        tls_node.external_url,
        ca_file=tls_node.files["ca"],
        cert_file=tls_node.files["client_cert"],
        key_file=tls_node.files["client_key"],
        external_auth=True,
        **options,
    )


def test_client_certificate_login(tls_node: TlsNode, key: str) -> None:
    settings = external_settings(tls_node, connection_name=f"external {key}")
    received = round_trip(settings, key)
    assert [event.data for event in received] == [{"over": "tls"}]
    rows = named_connections(tls_node, f"external {key}")
    assert rows
    assert {(row["user"], row["auth_mechanism"], row["ssl"]) for row in rows} == {
        (CLIENT_USER, "EXTERNAL", True)
    }


def test_a_certificate_of_no_known_user_is_refused_clearly(
    tls_node: TlsNode, tmp_path: Path
) -> None:
    stranger = tls_node.ca.issue_cert("stranger", common_name="stranger")
    cert = tmp_path / "stranger.pem"
    stranger.private_key_and_cert_chain_pem.write_to_path(str(cert))
    settings = BrokerSettings(
        tls_node.external_url, ca_file=tls_node.files["ca"], cert_file=cert, external_auth=True
    )
    with pytest.raises(BrokerUnavailable, match="refused the client certificate's user"):
        publish_domain_event("tls.stranger", {}, connection_settings=settings)


def test_the_cli_takes_tls_options(
    tls_node: TlsNode, app_user: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = str(tls_node.files["ca"])
    assert cli_main(["--url", app_user, "--ca-file", ca, "publish", key, '{"n": 1}']) == 0
    assert json.loads(capsys.readouterr().out)["data"] == {"n": 1}
    external = [
        "--url",
        tls_node.external_url,
        "--ca-file",
        ca,
        "--cert-file",
        str(tls_node.files["client_cert"]),
        "--key-file",
        str(tls_node.files["client_key"]),
        "--external-auth",
    ]
    assert cli_main([*external, "status", "no-such-subscriber"]) == 1
    assert "no such queue" in capsys.readouterr().out
    assert cli_main(["--url", app_user, "status", "x"]) == 1  # no CA: the system's CAs refuse
    error = capsys.readouterr().err
    assert "certificate" in error and not leaked(error)


def test_the_relay_takes_tls_options(
    tls_node: TlsNode, app_user: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from domain_event_broker.sqlalchemy import add_event
    from domain_event_broker.sqlalchemy.tables import metadata

    database = f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    engine = create_engine(database)
    metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        add_event(session, key, {"relayed": True})
    engine.dispose()
    settings = BrokerSettings(app_user, ca_file=tls_node.files["ca"])
    received: list[DomainEvent] = []

    def relay(k: str, d: Any, connection_settings: Any) -> None:
        status = relay_main(
            [
                *("--database-url", database, "--url", app_user),
                *("--ca-file", str(tls_node.files["ca"]), "--once"),
            ]
        )
        assert status == 0

    received = round_trip(settings, key, relay)
    assert [event.data for event in received] == [{"relayed": True}]
    assert "relayed 1 events" in capsys.readouterr().out


@pytest.mark.parametrize("login", ["password", "certificate"])
def test_the_asyncio_side_connects_from_the_same_settings(
    tls_node: TlsNode, app_user: str, key: str, login: str
) -> None:
    aio_pika = pytest.importorskip("aio_pika")
    import asyncio

    from domain_event_broker.connection import asyncio_connect_arguments

    name = f"aio {login} {key}"
    if login == "password":
        settings = BrokerSettings(app_user, ca_file=tls_node.files["ca"], connection_name=name)
    else:
        settings = external_settings(tls_node, connection_name=name)
    (arguments,) = asyncio_connect_arguments(settings, "aio")

    async def connect_and_look() -> list[dict[str, Any]]:
        connection = await aio_pika.connect(**arguments)
        try:
            await connection.channel()
            return await asyncio.to_thread(named_connections, tls_node, name)
        finally:
            await connection.close()

    rows = asyncio.run(connect_and_look())
    expected = ("tls-app", "PLAIN") if login == "password" else (CLIENT_USER, "EXTERNAL")
    assert [(row["user"], row["auth_mechanism"], row["ssl"]) for row in rows] == [(*expected, True)]
