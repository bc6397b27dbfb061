"""Collects the figures of the fault cases and prints them at the end of the run.

Each fault test closes the process-wide publishers it opened: one left connected to a
throw-away node would go on reconnecting to it after the node is gone, and pika's ERROR
lines about that would land in later tests' logs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine

from domain_event_broker.publisher import close_shared_publishers
from domain_event_broker.sqlalchemy import metadata
from pg_database import create_database, drop_database, new_database_name, sqlalchemy_url

_FIGURES: list[str] = []


@pytest.fixture(autouse=True)
def no_publisher_outlives_its_test() -> Iterator[None]:
    yield
    close_shared_publishers()


@pytest.fixture
def outbox_database() -> Iterator[Engine]:
    """A PostgreSQL database of the test's own with the outbox table, dropped afterwards."""
    name = new_database_name("faults")
    create_database(name)
    engine = create_engine(sqlalchemy_url(name))
    try:
        metadata.create_all(engine)
        yield engine
    finally:
        engine.dispose()
        drop_database(name)


@pytest.fixture
def report_figures() -> Callable[[str], None]:
    """Record one line of figures for the summary at the end of the test run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("fault injection figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
