"""publish_on_commit as 3.x code and test suites use it, and every commit hook runs.

The first tests are 3.x's own (``tests/django/test_publish_on_commit.py``):
they patch ``domain_event_broker.django.transaction.publish_domain_event`` and
check it is called with exactly what ``publish_on_commit`` was given. The
others run on PostgreSQL with the real broker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from unittest.mock import patch

import pytest
from django.db import transaction
from testproject.shop.models import Order

from django_tests.conftest import bodies
from domain_event_broker import BrokerUnavailable, InvalidRoutingKey
from domain_event_broker.django import publish_on_commit
from domain_event_broker.observability import Metrics, add_listener

#: A broker that cannot be reached: nothing listens on port 1.
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F"


class RollbackError(Exception):
    pass


@patch("domain_event_broker.django.transaction.publish_domain_event")
def test_publish_no_transaction(publish_mock) -> None:  # type: ignore[no-untyped-def]
    assert publish_on_commit("test.no_transaction", {}) is None
    publish_mock.assert_called_with("test.no_transaction", {})


@patch("domain_event_broker.django.transaction.publish_domain_event")
def test_publish_on_commit(publish_mock) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        publish_on_commit("test.commit", {})
        assert not publish_mock.called
    publish_mock.assert_called_with("test.commit", {})


@patch("domain_event_broker.django.transaction.publish_domain_event")
def test_discard_on_rollback(publish_mock) -> None:  # type: ignore[no-untyped-def]
    try:
        with transaction.atomic():
            publish_on_commit("test.rollback", {})
            raise RollbackError("Rollback transaction")
    except RollbackError:
        pass
    assert not publish_mock.called
    with transaction.atomic():
        pass
    assert not publish_mock.called


@patch("domain_event_broker.django.transaction.publish_domain_event")
def test_every_argument_is_passed_on_as_given(publish_mock) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        publish_on_commit("x.y", {"a": 1}, "7", uuid_string="u-1", connection_settings=None)
        publish_on_commit("x.z", data={}, timestamp=1.5)
    assert publish_mock.call_args_list[0] == (
        ("x.y", {"a": 1}, "7"),
        {"uuid_string": "u-1", "connection_settings": None},
    )
    assert publish_mock.call_args_list[1] == (("x.z",), {"data": {}, "timestamp": 1.5})


@patch("domain_event_broker.django.transaction.publish_domain_event")
def test_a_bad_event_still_fails_at_the_call(publish_mock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRoutingKey), transaction.atomic():
        Order.objects.create(reference="C-1")
        publish_on_commit("x..y", {})
    with pytest.raises(TypeError, match="publish_on_commit"):
        publish_on_commit("x.y", {}, colour="red")
    assert not publish_mock.called
    assert not Order.objects.exists()


# Every commit hook runs (PostgreSQL, real broker) ---------------------------------
@pytest.fixture
def metrics() -> Iterator[Metrics]:
    metrics = Metrics()
    remove = add_listener(metrics)
    yield metrics
    remove()


def test_a_failed_publish_does_not_stop_the_transactions_other_commit_hooks(
    broker_url: str, event_queue: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    app_hooks: list[str] = []
    with caplog.at_level(logging.ERROR), transaction.atomic():
        Order.objects.create(reference="C-2")
        transaction.on_commit(lambda: app_hooks.append("before"))
        publish_on_commit(
            f"{event_queue}.order.placed",
            {"n": 1},
            uuid_string="event-1",
            connection_settings=UNREACHABLE,
        )
        publish_on_commit(f"{event_queue}.order.placed", {"n": 2})
        transaction.on_commit(lambda: app_hooks.append("after"))
    assert [body["data"] for body in bodies(broker_url, event_queue)] == [{"n": 2}]
    assert app_hooks == ["before", "after"]
    assert Order.objects.filter(reference="C-2").exists()
    [record] = [r for r in caplog.records if r.name.startswith("domain_event_broker")]
    assert record.levelno == logging.ERROR
    assert f"{event_queue}.order.placed" in record.getMessage()
    assert "event-1" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is BrokerUnavailable
    assert metrics.count("publish_failed", routing_key=f"{event_queue}.order.placed") == 1


def test_without_an_event_id_the_failure_names_the_routing_key(
    event_queue: str, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), transaction.atomic():
        publish_on_commit(f"{event_queue}.order.placed", {}, connection_settings=UNREACHABLE)
    [record] = [r for r in caplog.records if r.name.startswith("domain_event_broker")]
    assert record.levelno == logging.ERROR
    assert f"{event_queue}.order.placed" in record.getMessage()
    assert metrics.count("publish_failed") == 1


def test_outside_a_transaction_it_publishes_at_once_and_the_error_reaches_the_caller(
    broker_url: str, event_queue: str, metrics: Metrics
) -> None:
    with pytest.raises(BrokerUnavailable, match="cannot reach RabbitMQ"):
        publish_on_commit(f"{event_queue}.order.placed", {"n": 3}, connection_settings=UNREACHABLE)
    assert metrics.count("publish_failed") == 1
    publish_on_commit(f"{event_queue}.order.placed", {"n": 4})
    assert [body["data"] for body in bodies(broker_url, event_queue)] == [{"n": 4}]
