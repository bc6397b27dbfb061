"""The README's examples and the modules' docstring examples run as written.

The docs site's blocks are run by test_docs_site.py; this file covers README.md, which
GitHub and PyPI show on their own, and the examples in docstrings (which the API reference
of the site shows).
"""

from __future__ import annotations

import doctest
from pathlib import Path
from types import ModuleType

import pytest

from docs_blocks import README, Block, blocks, environment, run_script
from domain_event_broker import connection, events, observability, settings, testing


@pytest.mark.parametrize("module", [connection, events, observability, settings, testing])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


PYTHON = [block for block in blocks(README) if block.language == "python"]


def test_the_readme_is_a_short_front_page_with_an_example() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 130
    assert text.index("## Two commands") < text.index("## Install") < text.index("## More")
    assert len(PYTHON) >= 1
    assert {block.language for block in blocks(README)} <= {"python", "sh"}


@pytest.mark.parametrize("block", PYTHON, ids=[block.where for block in PYTHON])
def test_readme_python_block_runs_against_the_broker(
    block: Block, broker_url: str, tmp_path: Path
) -> None:
    result = run_script(block.code, tmp_path, environment(broker_url))
    assert result.returncode == 0, result.stdout + result.stderr
    if "def welcome" in block.code:
        assert result.stdout == "welcome, Ada\n"
        assert "consuming queue readme-welcome for user.registered" in result.stderr


def test_every_readme_link_to_the_docs_names_a_page() -> None:
    import re

    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / target).exists(), target
