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

from domain_event_broker.publisher import close_shared_publishers

from . import (
    aio,
    console,
    consume,
    contracts,
    history,
    instrumented,
    latency,
    memory,
    ordered,
    publish,
)
from .harness import (
    REPO_ROOT,
    Broker,
    Context,
    DisturbanceMonitor,
    Row,
    compare,
    environment,
    text_table,
    wait_for_broker,
    write_results,
)

CaseFunction = Callable[[Context], list[Row]]

CASES: dict[str, CaseFunction] = {
    **publish.CASES,
    **consume.CASES,
    **latency.CASES,
    **memory.CASES,
    **instrumented.CASES,
    **aio.CASES,
    **contracts.CASES,
    **console.CASES,
    **history.CASES,
    **ordered.CASES,
}
#: How often a case is tried when something disturbs it (a broker restart, an alarm).
ATTEMPTS = 3
#: Cases left out of a run unless named with --only (they take long and only inform defaults).
OPTIONAL = set(consume.OPTIONAL) | set(instrumented.OPTIONAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, quick 1)")
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
    rounds = options.rounds or (1 if options.quick else 5)
    names = options.only or [name for name in CASES if name not in OPTIONAL]
    monitor = DisturbanceMonitor()
    logging.getLogger().addHandler(monitor)  # pika's own complaints are not printed, only noted

    started = time.monotonic()
    rows: list[Row] = []
    failed: list[str] = []
    with Broker(options.host) as broker:
        context = Context(broker, rounds, options.quick, log=_log)
        _log(f"vhost {broker.vhost} on RabbitMQ {broker.version}; {rounds} round(s)")
        for name in names:
            case_rows = _run_case(name, context, monitor)
            if case_rows is None:
                failed.append(name)
            else:
                rows += case_rows
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
    if failed:
        print(f"cases that failed every attempt: {', '.join(failed)}")
        return 1
    return 0


def _run_case(name: str, context: Context, monitor: DisturbanceMonitor) -> list[Row] | None:
    """Run one case; run it again when the broker was restarted or alarmed meanwhile."""
    for attempt in range(1, ATTEMPTS + 1):
        wait_for_broker()
        monitor.reset()
        _log(f"{name} ..." if attempt == 1 else f"{name} (attempt {attempt}) ...")
        case_started = time.monotonic()
        try:
            rows = CASES[name](context)
        except Exception as error:  # a broker restart surfaces as many kinds of error
            reason = monitor.reason or f"{type(error).__name__}: {error}"
            rows = None
        else:
            reason = monitor.reason
        finally:
            close_shared_publishers()
        if reason is None:
            _log(f"  {name}: {time.monotonic() - case_started:.1f} s")
            return rows
        _log(f"  {name} was disturbed ({reason}); waiting for the broker to run it again")
        if rows is not None and attempt == ATTEMPTS:
            for row in rows:
                row.note = f"disturbed in every attempt ({reason[:80]}). {row.note}".strip()
            return rows
    return None


def _log(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
