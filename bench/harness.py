"""Timing, medians, ratios, the results table and its JSON and Markdown files.

Every row of the table is one figure of our public API (``ours``) beside a
baseline measured in the same run: raw pika, aio-pika, or another figure of
ours. Variants of a case run interleaved (ours, baseline, baseline, ours, ...)
so that a noisy neighbour on this machine hurts both alike; a row reports the
median of the rounds and the ratio of the medians.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from domain_event_broker import DomainEvent

EXCHANGE = "domain-events"
#: Size of every event body on the wire, as in the issue's measurements.
EVENT_BYTES = 200
PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")
REPO_ROOT = Path(__file__).resolve().parent.parent


# Events ---------------------------------------------------------------------------------------
def _pad_for(routing_key: str) -> str:
    probe = DomainEvent(routing_key, {"n": 100000, "t": 0.0, "pad": ""}, timestamp=time.time())
    return "x" * max(0, EVENT_BYTES - len(probe.to_json()))


_PADS: dict[str, str] = {}


def event_data(routing_key: str, n: int = 100000, t: float = 0.0) -> dict[str, Any]:
    """Data that makes an event of about :data:`EVENT_BYTES` bytes on the wire."""
    pad = _PADS.get(routing_key)
    if pad is None:
        pad = _PADS[routing_key] = _pad_for(routing_key)
    return {"n": n, "t": t, "pad": pad}


def event_body(routing_key: str) -> bytes:
    """One serialised event of :data:`EVENT_BYTES` bytes, for raw clients and for filling queues."""
    return DomainEvent(routing_key, event_data(routing_key)).to_json().encode()


# The broker -----------------------------------------------------------------------------------
def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def wait_for_broker(timeout: float = 300.0) -> None:
    """Wait until RabbitMQ runs without a resource alarm.

    Others on this machine may restart it or raise an alarm for a while.
    """
    deadline = time.monotonic() + timeout
    while True:
        failed = None
        for check in ("check_running", "check_local_alarms"):
            result = subprocess.run(
                ["rabbitmq-diagnostics", "-q", check], capture_output=True, check=False
            )
            if result.returncode != 0:
                failed = check
                break
        if failed is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ is not ready: rabbitmq-diagnostics {failed} fails")
        time.sleep(1.0)


class DisturbanceMonitor(logging.Handler):
    """Notices what spoils a measurement: a warning or error from pika or from our library.

    A broker restart, a resource alarm (``Connection.Blocked``) or a lost
    connection all log one; nothing does in an undisturbed run.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.reason is None and record.name.startswith(("pika", "domain_event_broker")):
            self.reason = f"{record.name}: {record.getMessage()}"[:300]

    def reset(self) -> None:
        self.reason = None


class Broker:
    """A vhost of our own on the local RabbitMQ, deleted on exit: no other queue is touched."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.host = host
        self.port = port
        self.vhost = f"deb-bench-{uuid.uuid4().hex[:8]}"
        self.url = f"amqp://guest:guest@{host}:{port}/{self.vhost}"
        self.version = "?"

    def __enter__(self) -> Broker:
        wait_for_broker()
        for attempt in range(5):
            try:
                rabbitmqctl("add_vhost", self.vhost)
                rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
                break
            except RuntimeError:
                if attempt == 4:
                    raise
                wait_for_broker()
        with self.connection() as connection:
            properties = connection._impl.server_properties
            self.version = _text(properties.get("version", "?"))
            channel = connection.channel()
            channel.exchange_declare(EXCHANGE, "topic", durable=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            wait_for_broker(timeout=60)
            rabbitmqctl("delete_vhost", self.vhost)

    def parameters(self) -> pika.URLParameters:
        return pika.URLParameters(self.url)

    def connection(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.parameters())

    def queue(self, name: str, *binding_keys: str) -> None:
        """Declare a durable queue bound to the events exchange."""
        with self.connection() as connection:
            channel = connection.channel()
            channel.queue_declare(name, durable=True)
            for key in binding_keys:
                channel.queue_bind(name, EXCHANGE, key)

    def purge(self, name: str) -> None:
        with self.connection() as connection:
            connection.channel().queue_purge(name)

    def delete_queue(self, name: str) -> None:
        with self.connection() as connection:
            connection.channel().queue_delete(name)

    def depth(self, name: str) -> int:
        with self.connection() as connection:
            result = connection.channel().queue_declare(name, passive=True)
            return int(result.method.message_count)

    def fill(self, queue: str, routing_key: str, count: int, timeout: float = 120.0) -> None:
        """Put ``count`` events for ``routing_key`` (routed to ``queue``) in the backlog."""
        body = event_body(routing_key)
        start = self.depth(queue)
        with self.connection() as connection:
            channel = connection.channel()
            for _ in range(count):
                channel.basic_publish(EXCHANGE, routing_key, body, PERSISTENT)
        deadline = time.monotonic() + timeout
        while self.depth(queue) < start + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue {queue} did not fill up to {start + count}")
            time.sleep(0.05)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:6]}"


# Rounds ---------------------------------------------------------------------------------------
@dataclass
class Context:
    broker: Broker
    rounds: int
    quick: bool
    log: Callable[[str], None] = print

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def interleave(
    context: Context, variants: dict[str, Callable[[], float]], unit: str = "events/s"
) -> dict[str, list[float]]:
    """Run every variant once per round, alternating the order; return the samples."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(context.rounds):
        for name in names if number % 2 == 0 else reversed(names):
            value = variants[name]()
            samples[name].append(value)
            context.log(f"    round {number + 1}: {name}: {format_value(value, unit)}")
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# Rows -------------------------------------------------------------------------------------------
@dataclass
class Series:
    label: str
    samples: list[float]

    @property
    def median(self) -> float:
        return median(self.samples)


@dataclass
class Row:
    """One line of the table: our figure, its baseline and the target on their ratio."""

    group: str
    case: str
    unit: str  # "events/s", "ms" or "MB"
    ours: Series
    baseline: Series | None = None
    #: "ratio>=" or "ratio<=" (ours/baseline), "abs<=" (ours itself), or "" for none.
    target_kind: str = ""
    target_value: float = 0.0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median or self.target_kind == "abs<=":
            return None
        return self.ours.median / self.baseline.median

    @property
    def target_text(self) -> str:
        if self.target_kind == "ratio>=":
            return f">= {self.target_value:g}x"
        if self.target_kind == "ratio<=":
            return f"<= {self.target_value:g}x"
        if self.target_kind == "abs<=":
            return f"<= {self.target_value:g} {self.unit}"
        return ""

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target_kind == "ratio>=":
            return None if ratio is None else ratio >= self.target_value
        if self.target_kind == "ratio<=":
            return None if ratio is None else ratio <= self.target_value
        if self.target_kind == "abs<=":
            return self.ours.median <= self.target_value
        return None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ours"]["median"] = self.ours.median
        if self.baseline is not None:
            data["baseline"]["median"] = self.baseline.median
        data["ratio"] = self.ratio
        data["target"] = self.target_text
        data["met"] = self.met
        return data


def format_value(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "-"
    if unit == "events/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


COLUMNS = ("case", "ours", "baseline", "baseline value", "ratio", "target", "met")


def row_cells(row: Row) -> list[str]:
    ratio = row.ratio
    met = row.met
    return [
        f"{row.case} ({len(row.ours.samples)}x)" if len(row.ours.samples) > 1 else row.case,
        format_value(row.ours.median, row.unit),
        row.baseline.label if row.baseline else "",
        format_value(row.baseline.median, row.unit) if row.baseline else "",
        "" if ratio is None else f"{ratio:.2f}x",
        row.target_text,
        "" if met is None else ("yes" if met else "NO"),
    ]


def text_table(rows: list[Row]) -> str:
    cells = [list(COLUMNS)] + [row_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    group = None
    for index, line in enumerate(cells):
        if index > 0 and rows[index - 1].group != group:
            group = rows[index - 1].group
            rule = max(0, sum(widths) + 2 * len(widths) - 4 - len(group))
            lines.append(f"-- {group} " + "-" * rule)
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| group | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = [row.group, *row_cells(row)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    notes = [f"- **{row.case}**: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def environment(broker: Broker, context: Context, command: str) -> dict[str, Any]:
    import pika as pika_module

    try:
        import aio_pika

        aio_pika_version = aio_pika.__version__
    except ImportError:  # pragma: no cover - the bench extra installs it
        aio_pika_version = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": command,
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pika": pika_module.__version__,
        "aio_pika": aio_pika_version,
        "rabbitmq": broker.version,
        "rounds": context.rounds,
        "quick": context.quick,
        "load_average": os.getloadavg(),
    }


def write_results(
    out_dir: Path, rows: list[Row], env: dict[str, Any], seconds: float
) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = {**env, "seconds": round(seconds, 1)}
    json_path = out_dir / f"bench-{stamp}.json"
    md_path = out_dir / f"bench-{stamp}.md"
    json_text = json.dumps({"environment": env, "rows": [row.as_dict() for row in rows]}, indent=2)
    header = (
        f"`{env['command']}` on {env['date']}: {env['cpus']} cores, Python {env['python']}, "
        f"pika {env['pika']}, aio-pika {env['aio_pika']}, RabbitMQ {env['rabbitmq']} on "
        f"loopback, {env['rounds']} rounds (medians), {env['seconds']:.0f} s.\n\n"
    )
    md_text = header + markdown_table(rows) + "\n"
    for path, text in ((json_path, json_text), (md_path, md_text)):
        path.write_text(text)
    (out_dir / "latest.json").write_text(json_text)
    (out_dir / "latest.md").write_text(md_text)
    return json_path, md_path


def compare(previous_path: Path, rows: list[Row]) -> str:
    """Our medians and ratios beside those of an earlier run's JSON file."""
    previous = {row["case"]: row for row in json.loads(previous_path.read_text())["rows"]}
    lines = [f"compared with {previous_path}:"]
    for row in rows:
        before = previous.get(row.case)
        if before is None:
            continue
        old = before["ours"]["median"]
        change = (row.ours.median / old - 1) * 100 if old else float("nan")
        old_ratio = before.get("ratio")
        ratio = row.ratio
        ratios = (
            f"ratio {old_ratio:.2f}x -> {ratio:.2f}x" if old_ratio and ratio is not None else ""
        )
        lines.append(
            f"  {row.case}: {format_value(old, row.unit)} -> "
            f"{format_value(row.ours.median, row.unit)} ({change:+.0f}%) {ratios}"
        )
    return "\n".join(lines)


# Child processes ------------------------------------------------------------------------------
class Child:
    """A ``python -m bench.worker ROLE`` process: it says ready, waits for go, says its result."""

    def __init__(self, role: str, **arguments: Any) -> None:
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", role, json.dumps(arguments)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(10)
            raise RuntimeError(f"bench worker {self.role} ended (exit code {code}), no result")
        return json.loads(line)  # type: ignore[no-any-return]

    def ready(self) -> dict[str, Any]:
        message = self._read()
        if message.get("state") != "ready":
            raise RuntimeError(f"bench worker {self.role}: expected ready, got {message}")
        return message

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 300.0) -> dict[str, Any]:
        message = self._read()
        self.process.wait(timeout)
        return message

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def children(specs: list[tuple[str, dict[str, Any]]]) -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        for role, arguments in specs:
            started.append(Child(role, **arguments))
        yield started
    finally:
        for child in started:
            child.kill()


def now() -> float:
    """A clock that all processes on this machine share (CLOCK_MONOTONIC)."""
    return time.monotonic()


def quiet_pika() -> None:
    import logging

    logging.getLogger("pika").setLevel(logging.WARNING)
