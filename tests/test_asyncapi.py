"""``domain-events asyncapi MODULE``: the document of a module's subscribers and typed events,
validated against the official AsyncAPI 3.0.0 JSON Schema (npm ``@asyncapi/specs`` 6, fetched
by ``make asyncapi-schema``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from domain_event_broker.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(
    os.environ.get(
        "DEB_ASYNCAPI_SCHEMA",
        Path.home()
        / ".cache/domain-event-broker/asyncapi-specs-6/node_modules/@asyncapi/specs/schemas"
        / "3.0.0.json",
    )
)
COMMAND = [sys.executable, "-m", "domain_event_broker.cli"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA.exists():
        pytest.fail(f"the AsyncAPI 3.0.0 schema is missing at {SCHEMA}: run make asyncapi-schema")
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def asyncapi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "asyncapi", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def test_the_example_projects_document_is_valid_asyncapi(
    validator: jsonschema.Draft7Validator,
) -> None:
    # A broker nobody listens at: describing a module connects to nothing.
    done = asyncapi("examples.contracts_app", env={"DOMAIN_EVENT_BROKER": "amqp://127.0.0.1:9/"})
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # standard output holds the document and nothing else
    assert errors(validator, document) == []
    assert document["asyncapi"] == "3.0.0"

    placed = document["components"]["messages"]["order.placed"]
    assert placed["x-domain-event-version"] == 2
    assert placed["headers"]["properties"]["x-domain-event-version"]["const"] == 2
    data = placed["payload"]["properties"]["data"]
    assert data["required"] == ["currency", "order_id", "total_cents"]
    assert data["properties"]["currency"] == {"enum": ["EUR", "USD"]}
    assert data["properties"]["lines"]["items"]["required"] == ["quantity", "sku"]

    stock = document["operations"]["stock-reservations"]
    assert stock["action"] == "receive"
    assert stock["messages"] == [{"$ref": "#/channels/stock-reservations/messages/order.placed"}]
    assert stock["x-domain-event-broker"] == {
        "exchange": "domain-events",
        "bindingKeys": ["order.placed"],
        "maxRetries": 3,
        "deadLetter": True,
        "deadLetterQueue": "stock-reservations-dl",
        "queueType": "classic",
    }
    audit = document["operations"]["order-audit"]
    assert audit["messages"] == [{"$ref": "#/channels/order-audit/messages/untyped"}]
    assert document["components"]["messages"]["untyped"]["payload"]["properties"]["data"] == {}
    assert document["operations"]["publish.order.cancelled"]["action"] == "send"


def test_yaml_is_the_same_document(validator: jsonschema.Draft7Validator) -> None:
    as_json = asyncapi("examples.contracts_app")
    as_yaml = asyncapi("examples.contracts_app", "--yaml")
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)


def test_async_subscribers_and_pydantic_models_are_described(
    validator: jsonschema.Draft7Validator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "pricing_events.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel
            from domain_event_broker.aio import AsyncSubscriber
            from domain_event_broker.contracts import event_type

            class PriceChangedData(BaseModel):
                sku: str
                cents: int

            PriceChanged = event_type("price.changed", PriceChangedData, version=3)

            async def reprice(event: PriceChanged) -> None:
                pass

            subscriber = AsyncSubscriber(exchange="pricing")
            subscriber.register(reprice, "repricer", max_retries=5)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["asyncapi", "pricing_events"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert errors(validator, document) == []
    assert set(document["channels"]) == {"pricing", "repricer"}
    data = document["components"]["messages"]["price.changed"]["payload"]["properties"]["data"]
    assert data["required"] == ["sku", "cents"]
    assert document["operations"]["repricer"]["x-domain-event-broker"]["maxRetries"] == 5


def test_a_broken_document_fails_the_schema(validator: jsonschema.Draft7Validator) -> None:
    """The validation is real: a document with a channel of the wrong shape is refused."""
    document = json.loads(asyncapi("examples.contracts_app").stdout)
    document["channels"]["order-audit"]["address"] = 42
    document["operations"]["order-audit"]["action"] = "consume"
    assert len(errors(validator, document)) >= 2


def test_a_module_that_does_not_import_is_a_usage_error() -> None:
    done = asyncapi("no_such_module_here")
    assert done.returncode == 2
    assert "cannot import module 'no_such_module_here'" in done.stderr
    assert done.stdout == ""
