"""Django configured for the tests: the project in ``testproject`` on PostgreSQL and SQLite.

Django is set up when this file is imported (so test modules may import
models); the PostgreSQL database of the session is created, migrated and
dropped by the session fixture ``django_databases``. Every test gets the
session's RabbitMQ vhost as its broker and empty tables.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pika
import pytest

from support import delete_queues, get_all

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from django_tests.project import project_env  # noqa: E402
from pg_database import create_database, drop_database, new_database_name  # noqa: E402

DB_NAME = new_database_name("django")
SQLITE_PATH = os.path.join(tempfile.mkdtemp(prefix="deb-test-django-"), "db.sqlite3")
os.environ["DEB_TEST_DB_NAME"] = DB_NAME
os.environ["DEB_TEST_SQLITE_PATH"] = SQLITE_PATH
os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
django.setup()

from django.conf import settings as django_settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

from domain_event_broker import settings as broker_settings  # noqa: E402

# The app made the Django settings the default broker when Django started. The
# tests outside this folder share the session and stand for processes without
# Django: the Django settings count only while a test of this folder runs.
_DJANGO_DEFAULT = broker_settings.framework_default
broker_settings.framework_default = None

#: The database aliases a test parametrised over ``alias`` runs on.
ALIASES = ["default", "sqlite"]
SHOP_QUEUES = ("shop-recorder", "shop-counter")


@pytest.fixture(scope="session", autouse=True)
def django_databases() -> Iterator[None]:
    create_database(DB_NAME)
    try:
        for alias in ALIASES:
            call_command("migrate", database=alias, verbosity=0)
        yield
    finally:
        connections.close_all()
        drop_database(DB_NAME)
        if os.path.exists(SQLITE_PATH):
            os.remove(SQLITE_PATH)


@pytest.fixture(autouse=True)
def django_broker(broker_url: str) -> Iterator[str]:
    """The session's vhost as the broker of Django (``DOMAIN_EVENT_BROKER``), for one test."""
    previous = broker_settings.BROKER, django_settings.DOMAIN_EVENT_BROKER
    # The Django setting comes first; BROKER as the app copies it there at start-up.
    broker_settings.BROKER = django_settings.DOMAIN_EVENT_BROKER = broker_url
    broker_settings.framework_default = _DJANGO_DEFAULT
    yield broker_url
    broker_settings.framework_default = None
    broker_settings.BROKER, django_settings.DOMAIN_EVENT_BROKER = previous


@pytest.fixture(autouse=True)
def empty_tables(django_databases: None) -> Iterator[None]:
    yield
    from django.db import transaction
    from testproject.shop.models import HandledEvent, Order

    from domain_event_broker.django.models import OutboxEvent, ProcessedEvent

    for alias in ALIASES:
        with transaction.atomic(using=alias):
            for model in (OutboxEvent, ProcessedEvent, HandledEvent, Order):
                model.objects.using(alias).all().delete()
    connections.close_all()


@pytest.fixture
def manage_env(broker_url: str) -> dict[str, str]:
    """Environment of a ``python -m django ...`` subprocess of the test project."""
    return project_env(broker_url)


@pytest.fixture
def event_queue(broker_url: str, name: str) -> Iterator[str]:
    """A durable queue bound to the events exchange with ``<name>.#``; deleted afterwards.

    Publish events as ``f"{event_queue}.something"`` to find them there.
    """
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", routing_key=f"{name}.#")
    yield name
    delete_queues(broker_url, name)


@pytest.fixture
def shop_queues(broker_url: str) -> Iterator[tuple[str, ...]]:
    """The queues of the test project's handlers, deleted after the test."""
    yield SHOP_QUEUES
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        for queue in SHOP_QUEUES:
            channel.queue_delete(queue)
            channel.queue_delete(f"{queue}-dl")
            channel.exchange_delete(f"{queue}-dlx")
            channel.exchange_delete(f"{queue}-retry")


def bodies(broker_url: str, queue: str) -> list[dict[str, Any]]:
    """Take every event out of ``queue``; return their JSON bodies in arrival order."""
    return [json.loads(body) for _method, _properties, body in get_all(broker_url, queue)]
