"""The examples in the docstrings run as written."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from domain_event_broker import connection, events, observability, settings, testing


@pytest.mark.parametrize("module", [connection, events, observability, settings, testing])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0
