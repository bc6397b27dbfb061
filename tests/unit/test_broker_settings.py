"""Connection settings without a broker: masking, parsing, precedence, TLS options, names."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pika
import pika.credentials
import pytest
import trustme
from hypothesis import example, given
from hypothesis import strategies as st

from domain_event_broker import settings
from domain_event_broker.connection import (
    asyncio_connect_arguments,
    cluster_parameters,
    ssl_context_of,
)
from domain_event_broker.settings import BrokerSettings, mask_url, resolve_broker, split_urls

HOST_PART = "@rabbit.example:5672/%2F"


def leaked(password: str, text: str) -> list[str]:
    """The substrings of 4+ characters of ``password`` that ``text`` holds."""
    return [password[i : i + 4] for i in range(len(password) - 3) if password[i : i + 4] in text]


# Every character an operator might type into a password, the URL specials most of all.
passwords = st.text(
    alphabet=st.sampled_from(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:@#?,%&=+!$'*;[]{} ~\\\"é"
    ),
    min_size=4,
    max_size=40,
).filter(lambda password: not re.search(r",\s*amqps?://", password, re.IGNORECASE))


MALFORMED = [
    "amqp://app:pa/ss@host/",  # '/' ends the host part early: pika reads "pa" as the port
    "app:secretpw@host/",  # no scheme
    "amqp://app:pa:ss@w@host/",  # ':' and '@' in the password
    "amqp://app:pa,sswd@host/",  # ','
    "amqp://app:pa#sswd@host/",  # '#' starts a fragment
    "amqp://app:pa?sswd@host/",  # '?' starts a query
    "amqp://app:pa ss/wd@host:notaport/",
    "amqps://app:secr/et@host/%2F,amqp://app:sec#ret@other/",
    "http://app:secretpw@host/",
    "amqp://app:secretpw@host:99999999/",
]


def passwords_of(url: str) -> list[str]:
    found = []
    for node in split_urls(url):
        userinfo = node.split("://", 1)[-1].rsplit("@", 1)[0]
        found.append(userinfo.split(":", 1)[1] if "://" in node else userinfo)
    return found


@given(passwords)
@example("pa/ss")
@example("pa:ss@w")
@example("p,a#s?s")
def test_the_password_is_masked_whatever_it_holds(password: str) -> None:
    assert mask_url(f"amqp://app:{password}{HOST_PART}") == f"amqp://app:***{HOST_PART}"


@given(passwords, passwords)
def test_every_node_of_a_cluster_is_masked(first: str, second: str) -> None:
    url = f"amqp://app:{first}@rabbit-1/%2F, amqps://ops:{second}@rabbit-2/%2F"
    assert mask_url(url) == "amqp://app:***@rabbit-1/%2F, amqps://ops:***@rabbit-2/%2F"
    assert split_urls(url) == [
        f"amqp://app:{first}@rabbit-1/%2F",
        f"amqps://ops:{second}@rabbit-2/%2F",
    ]


@given(st.text())
def test_masking_never_fails(text: str) -> None:
    assert isinstance(mask_url(text), str)


def test_urls_without_a_password_are_shown_whole() -> None:
    assert mask_url("amqp://rabbit/") == "amqp://rabbit/"
    assert mask_url("amqp://app@rabbit/") == "amqp://app@rabbit/"
    assert mask_url(None) == "<no broker>"
    assert mask_url("app:secret@rabbit") == "***@rabbit"


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_url_is_read_whole_or_reported_without_its_password(url: str) -> None:
    passwords = passwords_of(url)
    try:
        parameters = cluster_parameters(url, "test")
    except ValueError as error:
        text = str(error)
        assert not [leak for password in passwords for leak in leaked(password, text)], text
        assert "AMQP URL" in text and "percent-encoded" in text
    else:
        # ':' '@' ',' are read as part of the password (up to the last '@').
        assert [node.credentials.password for node in parameters] == passwords
        assert [node.host for node in parameters] == ["host"]


#: Words every URL error holds whatever the password: a password that spells part
#: of them ("amqp/", "word") is found in the text without having leaked.
OUR_WORDING = (
    "not a valid AMQP URL: amqps://***: its user name or password holds '/', '?' or '#'; "
    "expected amqp://user:password@host:port/vhost (or amqps://), with any of "
    "/ : @ # ? % , in the user name or password written percent-encoded (%2F, %3A, %40, ...)"
)


@given(passwords)
@example(password="amqp/")
def test_parsing_any_password_either_works_or_says_nothing_of_it(password: str) -> None:
    url = f"amqp://app:{password}@rabbit.example/%2F"
    try:
        parameters = cluster_parameters(url, "test")
    except ValueError as error:
        text = str(error)
        assert not [leak for leak in leaked(password, text) if leak not in OUR_WORDING], text
    else:
        assert [node.host for node in parameters] == ["rabbit.example"]
        assert [node.credentials.password for node in parameters] == [unquote(password)]


def test_a_comma_in_the_password_is_not_a_second_node() -> None:
    (parameters,) = cluster_parameters("amqp://app:pa%2Css@rabbit/%2F", "test")
    (raw,) = cluster_parameters("amqp://app:pa,ss@rabbit/%2F", "test")
    assert raw.credentials.password == parameters.credentials.password == "pa,ss"


def test_settings_repr_holds_no_password() -> None:
    settings_ = BrokerSettings("amqps://app:hunter2@rabbit/%2F", ca_file="/ca.pem")
    assert "hunter2" not in repr(settings_)
    assert repr(settings_) == "BrokerSettings('amqps://app:***@rabbit/%2F', ca_file='/ca.pem')"


# Precedence of the default broker -----------------------------------------------------------
@pytest.fixture
def clean_defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv(settings.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(settings, "BROKER", "amqp://guest:guest@localhost:5672/%2F")
    monkeypatch.setattr(settings, "framework_default", None)
    yield monkeypatch


def nodes(connection_settings: object) -> tuple[object, ...] | None:
    broker = resolve_broker(connection_settings)
    return None if broker is None else broker.nodes


def test_nothing_set_is_the_local_broker(clean_defaults: pytest.MonkeyPatch) -> None:
    assert settings.BROKER == "amqp://guest:guest@localhost:5672/%2F"
    assert nodes("") == ("amqp://guest:guest@localhost:5672/%2F",)
    assert nodes(settings.DEFAULT) == nodes("")
    assert nodes(None) is None


def test_the_environment_variable_comes_before_the_built_in_default(
    clean_defaults: pytest.MonkeyPatch,
) -> None:
    clean_defaults.setenv("DOMAIN_EVENT_BROKER", "amqp://env:pw@env-rabbit/%2F")
    assert nodes("") == ("amqp://env:pw@env-rabbit/%2F",)
    assert settings.BROKER == "amqp://guest:guest@localhost:5672/%2F"  # as in 3.x


def test_an_assigned_broker_comes_before_the_environment(
    clean_defaults: pytest.MonkeyPatch,
) -> None:
    clean_defaults.setenv("DOMAIN_EVENT_BROKER", "amqp://env/%2F")
    clean_defaults.setattr(settings, "BROKER", "amqp://code/%2F")
    assert nodes("") == ("amqp://code/%2F",)
    clean_defaults.setattr(settings, "BROKER", None)
    assert nodes("") is None


def test_the_framework_setting_comes_first_none_included(
    clean_defaults: pytest.MonkeyPatch,
) -> None:
    clean_defaults.setenv("DOMAIN_EVENT_BROKER", "amqp://env/%2F")
    clean_defaults.setattr(settings, "BROKER", "amqp://code/%2F")
    clean_defaults.setattr(settings, "framework_default", lambda: "amqp://django/%2F")
    assert nodes("") == ("amqp://django/%2F",)
    clean_defaults.setattr(settings, "framework_default", lambda: None)
    assert nodes("") is None
    clean_defaults.setattr(settings, "framework_default", lambda: settings.NOT_SET)
    assert nodes("") == ("amqp://code/%2F",)


def test_an_explicit_argument_wins(clean_defaults: pytest.MonkeyPatch) -> None:
    clean_defaults.setattr(settings, "framework_default", lambda: None)
    assert nodes("amqp://mine/%2F") == ("amqp://mine/%2F",)


def test_options_without_a_url_apply_to_the_default_broker(
    clean_defaults: pytest.MonkeyPatch,
) -> None:
    clean_defaults.setenv("DOMAIN_EVENT_BROKER", "amqps://env/%2F")
    broker = resolve_broker(BrokerSettings(ca_file="/ca.pem", connection_name="billing"))
    assert broker is not None
    assert broker.nodes == ("amqps://env/%2F",)
    assert (broker.ca_file, broker.connection_name) == ("/ca.pem", "billing")


# What connection_settings may be ------------------------------------------------------------
def test_urls_lists_and_pika_parameters_are_accepted() -> None:
    given_parameters = pika.ConnectionParameters(host="rabbit-3", port=5673)
    broker = resolve_broker(["amqp://rabbit-1/%2F,amqp://rabbit-2/%2F", given_parameters])
    assert broker is not None
    parameters = cluster_parameters(broker, "test")
    assert [(node.host, node.port) for node in parameters] == [
        ("rabbit-1", 5672),
        ("rabbit-2", 5672),
        ("rabbit-3", 5673),
    ]
    assert parameters[2] is not given_parameters  # the caller's object is left as it was
    assert given_parameters.client_properties is None


@pytest.mark.parametrize("wrong", [42, b"amqp://rabbit/", {"host": "rabbit"}, [3]])
def test_anything_else_is_a_type_error(wrong: object) -> None:
    with pytest.raises(TypeError, match=r"connection_settings|BrokerSettings|list of nodes"):
        resolve_broker(wrong)


def test_equal_settings_are_one_publisher_key() -> None:
    assert BrokerSettings("amqp://a/%2F", ca_file="x") == BrokerSettings(
        "amqp://a/%2F", ca_file="x"
    )
    assert len({BrokerSettings("amqp://a/%2F"), BrokerSettings("amqp://a/%2F")}) == 1
    assert BrokerSettings("amqp://a/%2F") != BrokerSettings("amqp://a/%2F", connection_name="n")


# Connection names ---------------------------------------------------------------------------
def connection_name(connection_settings: object) -> str:
    (parameters,) = cluster_parameters(connection_settings, "publisher")
    name: str = parameters.client_properties["connection_name"]
    return name


def test_the_connection_name_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert connection_name("amqp://rabbit/").startswith("domain-event-broker publisher ")
    monkeypatch.setattr(settings, "CONNECTION_NAME", "billing")
    assert connection_name("amqp://rabbit/") == "billing"
    assert connection_name(BrokerSettings("amqp://rabbit/", connection_name="billing-2")) == (
        "billing-2"
    )


def test_the_service_name_is_a_setting_then_the_environment_then_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def service(connection_settings: object) -> tuple[str, str]:
        (parameters,) = cluster_parameters(connection_settings, "subscriber")
        properties = parameters.client_properties
        return properties["service"], properties["domain-event-broker-role"]

    monkeypatch.delenv("DOMAIN_EVENT_BROKER_SERVICE", raising=False)
    monkeypatch.setattr("sys.argv", ["/srv/bin/billing-worker", "--fast"])
    assert service("amqp://rabbit/") == ("billing-worker", "subscriber")
    monkeypatch.setenv("DOMAIN_EVENT_BROKER_SERVICE", "billing")
    assert service("amqp://rabbit/") == ("billing", "subscriber")
    assert service(BrokerSettings("amqp://rabbit/", service_name="shop")) == ("shop", "subscriber")
    assert "service_name='shop'" in repr(BrokerSettings("amqp://rabbit/", service_name="shop"))
    assert BrokerSettings(service_name="shop").on(BrokerSettings("amqp://a/")).service_name == (
        "shop"
    )


def test_a_client_properties_query_is_kept() -> None:
    url = "amqp://rabbit/?client_properties={'connection_name':'from-url','team':'pay'}"
    (parameters,) = cluster_parameters(url, "publisher")
    assert parameters.client_properties["connection_name"] == "from-url"
    assert parameters.client_properties["team"] == "pay"


# TLS options --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    client = ca.issue_cert("app")
    files = {"ca_file": folder / "ca.pem", "cert_file": folder / "cert.pem"}
    ca.cert_pem.write_to_path(files["ca_file"])
    client.private_key_and_cert_chain_pem.write_to_path(files["cert_file"])
    return files


def test_tls_files_make_a_context_used_for_every_node(tls_files: dict[str, Path]) -> None:
    broker = BrokerSettings("amqps://r1/%2F,amqps://r2:5700/%2F", **tls_files, external_auth=True)
    context = ssl_context_of(broker)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    parameters = cluster_parameters(broker, "test")
    assert [node.port for node in parameters] == [5671, 5700]
    for node in parameters:
        assert node.ssl_options is not None
        assert isinstance(node.credentials, pika.credentials.ExternalCredentials)


def test_a_context_of_ones_own_is_used_as_it_is() -> None:
    context = ssl.create_default_context()
    (parameters,) = cluster_parameters(BrokerSettings("amqps://r/", ssl_context=context), "t")
    assert parameters.ssl_options.context is context


def test_tls_settings_on_a_plain_url_are_refused(tls_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="amqps://"):
        cluster_parameters(BrokerSettings("amqp://app:pw@r/", **tls_files), "t")
    with pytest.raises(ValueError, match="EXTERNAL"):
        cluster_parameters(BrokerSettings("amqp://r/", external_auth=True), "t")


def test_missing_tls_files_say_which(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ca\.pem"):
        ssl_context_of(BrokerSettings("amqps://r/", ca_file=tmp_path / "ca.pem"))
    with pytest.raises(ValueError, match="key_file needs cert_file"):
        BrokerSettings("amqps://r/", key_file="k.pem")
    with pytest.raises(ValueError, match="not both"):
        BrokerSettings("amqps://r/", ssl_context=ssl.create_default_context(), ca_file="c")


def test_the_asyncio_side_gets_the_same_connection(tls_files: dict[str, Path]) -> None:
    broker = BrokerSettings("amqps://app:pw@rabbit:5671/vh", **tls_files, connection_name="n")
    (arguments,) = asyncio_connect_arguments(broker, "aio")
    assert arguments["host"] == "rabbit" and arguments["port"] == 5671
    assert arguments["virtualhost"] == "vh" and arguments["ssl"] is True
    assert isinstance(arguments["ssl_context"], ssl.SSLContext)
    assert (arguments["login"], arguments["password"]) == ("app", "pw")
    assert arguments["client_properties"]["connection_name"] == "n"
    external = BrokerSettings("amqps://rabbit/", **tls_files, external_auth=True)
    assert asyncio_connect_arguments(external, "aio")[0]["auth"] == "external"
