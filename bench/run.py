"""Run the benchmark suite: ``python -m bench.run [--quick] [--rounds N] [--only CASE ...]``.

Each case measures our public API and its raw-pika (or aio-pika) baseline in
the same run, rounds interleaved, and reports medians and their ratio. The
whole run happens in a vhost of its own, created here and deleted at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import consume, latency, memory, publish
from .harness import (
    REPO_ROOT,
    Broker,
    Context,
    Row,
    compare,
    environment,
    text_table,
    write_results,
)

CaseFunction = Callable[[Context], list[Row]]

CASES: dict[str, CaseFunction] = {
    **publish.CASES,
    **consume.CASES,
    **latency.CASES,
    **memory.CASES,
}
#: Cases left out of a run unless named with --only (they take long and only inform defaults).
OPTIONAL = set(consume.OPTIONAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 3, quick 1)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CASES),
        metavar="CASE",
        help=f"run only this case (repeatable): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "bench" / "results",
        help="where the JSON and Markdown results go (default bench/results/)",
    )
    parser.add_argument("--compare", type=Path, help="an earlier run's JSON to compare with")
    parser.add_argument("--host", default="127.0.0.1", help="RabbitMQ host (default 127.0.0.1)")
    options = parser.parse_args(argv)
    rounds = options.rounds or (1 if options.quick else 3)
    names = options.only or [name for name in CASES if name not in OPTIONAL]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    rows: list[Row] = []
    with Broker(options.host) as broker:
        context = Context(broker, rounds, options.quick, log=_log)
        _log(f"vhost {broker.vhost} on RabbitMQ {broker.version}; {rounds} round(s)")
        for name in names:
            _log(f"{name} ...")
            case_started = time.monotonic()
            rows += CASES[name](context)
            _log(f"  {name}: {time.monotonic() - case_started:.1f} s")
        command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
        env = environment(broker, context, command.strip())
    seconds = time.monotonic() - started
    print()
    print(text_table(rows))
    json_path, md_path = write_results(options.out, rows, env, seconds)
    print(f"\n{seconds:.0f} s; written to {json_path} and {md_path}")
    if options.compare:
        print(compare(options.compare, rows))
    missed = [row.case for row in rows if row.met is False]
    if missed:
        print(f"targets not met: {', '.join(missed)}")
    return 0


def _log(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
