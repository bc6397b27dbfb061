"""``domain-events check MODULE`` on the real broker: a queue declared with other arguments."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from domain_event_broker.core.operations import Bind, ExchangeDeclare, QueueDeclare
from domain_event_broker.core.topology import SubscriberTopology
from support import delete_subscriber_topology, queue_depth

ROOT = Path(__file__).resolve().parents[1]


def check(module_dir: Path, module: str, broker_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "domain_event_broker.cli", "check", module],
        cwd=module_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DOMAIN_EVENT_BROKER": broker_url},
    )


def declare_otherwise(channel: Any, topology: SubscriberTopology) -> None:
    """Declare the subscriber's topology, its queue with an argument the code does not set."""
    for operation in topology.declarations():
        if isinstance(operation, ExchangeDeclare):
            channel.exchange_declare(operation.name, operation.type, durable=operation.durable)
        elif isinstance(operation, QueueDeclare):
            arguments = dict(operation.arguments or {})
            if operation.name == topology.queue:
                arguments = {"x-max-length": 100}  # an operator's change, or an old release
            channel.queue_declare(operation.name, durable=operation.durable, arguments=arguments)
        elif isinstance(operation, Bind):
            channel.queue_bind(operation.queue, operation.exchange, operation.routing_key)


def test_check_reports_the_queue_declared_otherwise_and_a_safe_fix(
    tmp_path: Path, broker_url: str, channel: Any, name: str
) -> None:
    module = f"orders_{name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from domain_event_broker import Subscriber

            def handle(event):
                pass

            subscriber = Subscriber()
            subscriber.register(handle, {name!r}, ["check.placed"], dead_letter=True)
            """
        )
    )
    topology = SubscriberTopology(name, ("check.placed",), dead_letter=True)
    declare_otherwise(channel, topology)
    for number in range(2):
        channel.basic_publish("", name, b'{"data": %d}' % number)
    try:
        done = check(tmp_path, module, broker_url)
        assert done.returncode == 1, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == (
            f"queue {name}: declared with arguments {{'x-max-length': 100}} (durable=True, "
            f"auto_delete=False); the code declares {{'x-dead-letter-exchange': '{name}-dlx'}} "
            "(durable=True, auto_delete=False)"
        )
        assert "holds 2 events, so deleting it is no fix" in lines[1]
        assert f"delete queue name={name}" not in done.stdout
        assert lines[-1].startswith("1 difference(s) between")
        assert queue_depth(broker_url, name) == 2  # the check changed nothing

        channel.queue_purge(name)
        done = check(tmp_path, module, broker_url)
        assert done.returncode == 1
        assert f"it is empty: rabbitmqadmin delete queue name={name}, then start" in done.stdout

        channel.queue_delete(name)
        topology_ops = [
            op for op in topology.declarations() if isinstance(op, (QueueDeclare, Bind))
        ]
        for operation in topology_ops:
            if isinstance(operation, QueueDeclare) and operation.name == name:
                channel.queue_declare(name, durable=True, arguments=dict(operation.arguments or {}))
            elif isinstance(operation, Bind) and operation.queue == name:
                channel.queue_bind(name, operation.exchange, operation.routing_key)
        done = check(tmp_path, module, broker_url)
        assert done.returncode == 0, done.stdout
        assert done.stdout.strip().endswith(f"holds what {module} declares")
    finally:
        delete_subscriber_topology(broker_url, name)


def test_check_of_a_module_without_subscribers_is_a_usage_error(
    tmp_path: Path, broker_url: str
) -> None:
    (tmp_path / "nothing_here.py").write_text("VALUE = 1\n")
    done = check(tmp_path, "nothing_here", broker_url)
    assert done.returncode == 2
    assert "holds no Subscriber or AsyncSubscriber" in done.stderr
