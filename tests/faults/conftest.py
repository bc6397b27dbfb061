"""Collects the figures of the fault cases and prints them at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_FIGURES: list[str] = []


@pytest.fixture
def report_figures() -> Callable[[str], None]:
    """Record one line of figures for the summary at the end of the test run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("fault injection figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
