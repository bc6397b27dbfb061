"""A PostgreSQL database of its own for a test session, on the local server (trust auth).

Other people run the same suite on the same server at the same time, so each
session creates ``deb_test_<random>`` and drops it at the end.
"""

from __future__ import annotations

import os
import uuid

import psycopg

PG_HOST = os.environ.get("DEB_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DEB_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DEB_TEST_PG_USER", "postgres")


def new_database_name(kind: str) -> str:
    return f"deb_test_{kind}_{uuid.uuid4().hex[:10]}"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    )


def create_database(name: str) -> None:
    with _admin() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with _admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlalchemy_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
