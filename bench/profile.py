"""Profile the hot paths with py-spy: ``python -m bench.profile [SCENARIO ...] [--out DIR]``.

Each scenario runs in a child process under ``py-spy record`` (on-CPU samples,
every thread); the raw stacks go to ``DIR/SCENARIO.txt`` (flamegraph.pl and
speedscope read them) and a summary to ``DIR/SCENARIO-summary.txt``: samples
per thread, and the functions where the time goes (self and inclusive).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import consume, history, publish
from .harness import REPO_ROOT, Broker, quiet_pika, unique

Scenario = Callable[[str, str, int], float]

#: name -> (function run in the child, events, whether the queue is filled first)
SCENARIOS: dict[str, tuple[Scenario, int, bool]] = {
    # The queue argument names an exchange whose archive holds the events.
    "history": (history.profiled_read, 20000, True),
    "publish_loop": (lambda url, _q, n: publish.ours_loop(url, n), 3000, False),
    "publish_threads": (lambda url, _q, n: publish.ours_threads(url, n), 8000, False),
    "publish_many": (lambda url, _q, n: publish.ours_many(url, n), 30000, False),
    "pika_confirm_each": (lambda url, _q, n: publish.pika_confirm_each(url, n), 3000, False),
    "drain": (consume.ours_drain, 30000, True),
    "pika_drain": (consume.pika_drain, 30000, True),
    "retry": (consume.ours_retry, 3000, True),
    "pika_retry": (consume.pika_retry, 3000, True),
}

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def summarise(raw: Path, top: int = 25) -> str:
    """Where the samples of a py-spy raw (collapsed stacks) file went."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if frames[0].startswith(("thread (", "process ")):
            threads[frames[0]] += count
            frames = frames[1:]
        names = [_short(frame) for frame in frames]
        if names:
            own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples"]
    if threads:
        lines += ["", "by thread:"]
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common()]
    lines += ["", f"self (top {top}):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", f"inclusive, our code and pika's (top {top}):"]
    ours = [
        (name, n)
        for name, n in inclusive.most_common()
        if "domain_event_broker" in name or "pika" in name
    ]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def run_child(name: str, url: str, queue: str, count: int) -> None:
    quiet_pika()
    function = SCENARIOS[name][0]
    rate = function(url, queue, count)
    print(f"{name}: {count} events, {rate:,.0f}/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "profile")
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--child", nargs=4, metavar=("NAME", "URL", "QUEUE", "COUNT"))
    options = parser.parse_args(argv)
    if options.child:
        name, url, queue, count = options.child
        run_child(name, url, queue, int(count))
        return 0
    unknown = set(options.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    options.out.mkdir(parents=True, exist_ok=True)
    with Broker() as broker:
        for name in options.scenarios or list(SCENARIOS):
            _, count, fill = SCENARIOS[name]
            queue = unique("profile")
            consume.declare(broker, queue)
            if name == "history":
                history.prepare_archive(broker, queue, count)
            elif fill:
                broker.fill(queue, consume.ROUTING_KEY, count)
            else:
                broker.queue(queue, publish.ROUTING_KEY)  # where published events go
            raw = options.out / f"{name}.txt"
            command = [
                py_spy,
                "record",
                "--threads",
                "--rate",
                str(options.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                *(["--gil"] if options.gil else []),
                "--",
                sys.executable,
                "-m",
                "bench.profile",
                "--child",
                name,
                broker.url,
                queue,
                str(count),
            ]
            started = time.monotonic()
            subprocess.run(command, check=True, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
            summary = summarise(raw)
            (options.out / f"{name}-summary.txt").write_text(summary + "\n")
            print(f"== {name} ({time.monotonic() - started:.1f} s): {raw}")
            print(summary)
            print()
            consume.forget(broker, queue)
            if name == "history":
                history.forget_archive(broker, queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
