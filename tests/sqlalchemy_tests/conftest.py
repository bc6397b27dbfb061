"""SQLAlchemy on a PostgreSQL database of the session's own, and on an SQLite file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, delete
from sqlalchemy.orm import Session, sessionmaker

from domain_event_broker.sqlalchemy import inbox_table, metadata, outbox_table
from pg_database import create_database, drop_database, new_database_name, sqlalchemy_url

#: A business table of the application under test.
app_metadata = MetaData()
orders = Table(
    "shop_orders",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(100), nullable=False),
)
handled_events = Table(
    "shop_handled_events",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("subscriber", String(100), nullable=False),
    Column("uuid_string", String(64), nullable=False),
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = new_database_name("sqlalchemy")
    create_database(name)
    yield sqlalchemy_url(name)
    drop_database(name)


@pytest.fixture(scope="session")
def engines(postgres_url: str) -> Iterator[dict[str, Engine]]:
    sqlite_path = os.path.join(tempfile.mkdtemp(prefix="deb-test-sqlalchemy-"), "db.sqlite3")
    made = {
        "postgresql": create_engine(postgres_url),
        "sqlite": create_engine(f"sqlite:///{sqlite_path}"),
    }
    for engine in made.values():
        metadata.create_all(engine)
        app_metadata.create_all(engine)
    yield made
    for engine in made.values():
        engine.dispose()
    os.remove(sqlite_path)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, engines: dict[str, Engine]) -> Iterator[Engine]:
    """Each database in turn; its tables are emptied after the test."""
    chosen = engines[request.param]
    yield chosen
    empty(chosen)


@pytest.fixture
def pg_engine(engines: dict[str, Engine]) -> Iterator[Engine]:
    """PostgreSQL only (row locks, several relays, subprocesses)."""
    chosen = engines["postgresql"]
    yield chosen
    empty(chosen)


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


def empty(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in (outbox_table, inbox_table, orders, handled_events):
            connection.execute(delete(table))
