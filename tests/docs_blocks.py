"""The code blocks of README.md and docs/*.md, and ways to run them as a reader would.

A Python block runs as a script of its own (a fresh process: the hooks, listeners and
instrumentation it installs go away with it), with ``$DOMAIN_EVENT_BROKER`` pointing at the
test vhost and the local broker's URL in its text replaced by that vhost's. A block that
leaves names to the reader (a fragment) gets them from a *prelude*, and an *epilogue* checks
what it did; a block that consumes until stopped runs in the background until the events
it is given were handled, then gets SIGTERM, as a subscriber under a supervisor does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from domain_event_broker import publish_domain_event
from domain_event_broker.status import subscriber_status
from support import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: What a reader's local broker is called in the docs; replaced by the test vhost's URL.
LOCAL_BROKER = "amqp://guest:guest@localhost:5672/%2F"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<language>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_MARKER = re.compile(r"<!--\s*test:\s*(?P<key>[\w-]+)\s*-->\s*$")
_INCLUDE = re.compile(r'^--8<--\s+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    language: str
    code: str
    marker: str | None  # the key of `<!-- test: key -->` on the line before it

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def include(self) -> tuple[str, str | None] | None:
        """(path, section) when the block is a snippet included from a file."""
        lines = [line for line in self.code.splitlines() if line and not line.startswith("#")]
        match = _INCLUDE.match(lines[0]) if len(lines) == 1 else None
        return (match["path"], match["section"]) if match else None


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        found.append(
            Block(
                page,
                line,
                match["language"],
                textwrap.dedent(match["body"]),
                marker["key"] if marker else None,
            )
        )
    return found


def pages() -> list[Path]:
    """Every page of the site: new pages are found, not listed."""
    return sorted(DOCS.glob("*.md"))


@dataclass
class Script:
    """A block made into a script: what runs before and after it, and what to replace."""

    prelude: str = ""
    epilogue: str = ""
    replace: dict[str, str] = field(default_factory=dict)

    def source(self, code: str, broker_url: str) -> str:
        for old, new in self.replace.items():
            assert old in code, f"{old!r} is not in the block"
            code = code.replace(old, new)
        code = code.replace(LOCAL_BROKER, broker_url)
        parts = (textwrap.dedent(self.prelude), code, textwrap.dedent(self.epilogue))
        return "\n".join(part for part in parts if part)


def environment(broker_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "DOMAIN_EVENT_BROKER": broker_url, "PYTHONUNBUFFERED": "1", **extra}


def run_script(
    source: str, folder: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    path = folder / "block.py"
    path.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class Background:
    """A script running until stopped, its output collected as it comes."""

    def __init__(self, command: Sequence[str], folder: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in "".join(self.stdout) + "".join(self.stderr):
            assert self.process.poll() is None, f"it ended before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def stop(self, signal_number: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Send the signal, wait for the exit, return its status."""
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
        try:
            status = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(5)
        return status


def wait_for_consumer(broker_url: str, queue: str, background: Background) -> None:
    def consuming() -> bool:
        assert background.process.poll() is None, f"it ended:\n{background.output}"
        return (subscriber_status(queue, broker_url).consumers or 0) > 0

    wait_for(consuming, timeout=30, what=f"a consumer on {queue}")


@dataclass
class Consumer:
    """A block that consumes until stopped: what to publish to it and what it then prints."""

    queue: str
    expect: Sequence[str]
    publish: Sequence[tuple[str, dict[str, object]]] = ()
    script: Script = field(default_factory=Script)
    #: Called with the port map once it consumes (e.g. to ask its health probe).
    check: Callable[[Background], None] | None = None

    def run(self, code: str, broker_url: str, folder: Path) -> str:
        source = self.script.source(code, broker_url)
        (folder / "block.py").write_text(source, encoding="utf-8")
        background = Background(
            [sys.executable, str(folder / "block.py")], folder, environment(broker_url)
        )
        try:
            wait_for_consumer(broker_url, self.queue, background)
            for routing_key, data in self.publish:
                publish_domain_event(routing_key, data, connection_settings=broker_url)
            for text in self.expect:
                background.wait_for_output(text)
            if self.check is not None:
                self.check(background)
        finally:
            status = background.stop()
        assert status == 0, f"exit status {status} after SIGTERM:\n{background.output}"
        return background.output
