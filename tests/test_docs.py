"""The documentation's examples run as written.

- every docstring example of the modules below;
- every ```pycon block of README.md, each on its own (so each imports what it uses);
- the README's in-memory test example, with the names it leaves to the reader filled in.
"""

from __future__ import annotations

import doctest
import re
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from domain_event_broker import connection, events, observability, settings, testing

README = Path(__file__).resolve().parent.parent / "README.md"
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("module", [connection, events, observability, settings, testing])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def _blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced block of ``language`` in the README."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


PYCON = _blocks("pycon")


def test_the_readme_has_runnable_examples() -> None:
    assert len(PYCON) >= 4


@pytest.mark.parametrize(("line", "block"), PYCON, ids=[f"README.md:{n}" for n, _ in PYCON])
def test_readme_pycon_block(line: int, block: str) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block, {}, f"README.md:{line}", str(README), line)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"README.md:{line}: {result.failed} example(s) failed (see output)"


def _python_block_containing(needle: str) -> str:
    blocks = [block for _, block in _blocks("python") if needle in block]
    assert len(blocks) == 1, f"expected one python block with {needle!r}, found {len(blocks)}"
    return blocks[0]


def test_readme_in_memory_broker_example_passes() -> None:
    """The "Testing your own code" example is a passing test once its helpers exist."""
    code = _python_block_containing("def test_registration_sends_a_welcome_mail")
    code = code.replace("@pytest.fixture\n", "")  # called by hand below
    sent: list[str] = []

    def send_welcome_mail(event: events.DomainEvent) -> None:
        sent.append(event.data["email"])

    def register_user(email: str) -> None:
        from domain_event_broker import publish_domain_event

        publish_domain_event("user.registered", {"email": email})

    namespace: dict[str, object] = {
        "send_welcome_mail": send_welcome_mail,
        "register_user": register_user,
        "outbox": sent,
    }
    exec(compile(textwrap.dedent(code), f"{README}:testing", "exec"), namespace)
    fixture = namespace["broker"]
    test = namespace["test_registration_sends_a_welcome_mail"]
    generator = fixture()  # type: ignore[operator]
    broker = next(generator)
    try:
        test(broker)  # type: ignore[operator]
    finally:
        generator.close()
    assert sent == ["ada@example.com"]
