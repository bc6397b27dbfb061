"""Throughput of the outbox relay on the local PostgreSQL and RabbitMQ.

    python bench/outbox_relay.py --rows 20000 --relays 1 2

For each number of relays: write ``--rows`` pending rows, start that many
``domain-events-relay --once`` processes at once, time them until all exit,
then take every message off a queue bound to the events and count duplicates
and lost events. Beside it, ``Publisher.publish_many`` of the same events
without a database: the ceiling the relay works under.

Uses a database and a vhost of its own, both deleted at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import psycopg
from sqlalchemy import create_engine

from domain_event_broker import DomainEvent, Publisher
from domain_event_broker.outbox import outbox_entry
from domain_event_broker.sqlalchemy import metadata, outbox_table

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
RELAY = str(Path(sys.executable).parent / "domain-events-relay")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def drain(amqp_url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    bodies: list[bytes] = []
    for method, _properties, body in channel.consume(queue, inactivity_timeout=1.0):
        if method is None:
            break
        bodies.append(body)
        if len(bodies) % 1000 == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)
    channel.cancel()
    connection.close()
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--relays", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    database, vhost, queue = f"deb_bench_{tag}", f"deb-bench-{tag}", f"bench-{tag}"
    amqp_url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:  # type: ignore[arg-type]
        admin.execute(f'CREATE DATABASE "{database}"')
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    database_url = f"postgresql+psycopg://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
    engine = create_engine(database_url)
    try:
        metadata.create_all(engine)
        with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
            channel = connection.channel()
            channel.exchange_declare("domain-events", exchange_type="topic", durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, "domain-events", routing_key="bench.#")

        events = [DomainEvent("bench.order.placed", {"n": n}) for n in range(args.rows)]
        with Publisher(amqp_url) as publisher:
            started = time.monotonic()
            publisher.publish_many(events)
            ceiling = time.monotonic() - started
        drain(amqp_url, queue)
        print(
            f"publish_many without a database: {args.rows} events in {ceiling:.2f} s "
            f"({args.rows / ceiling:.0f} events/s)"
        )

        for relays in args.relays:
            entries = [outbox_entry("bench.order.placed", {"n": n}) for n in range(args.rows)]
            with engine.begin() as connection:
                connection.execute(
                    outbox_table.insert(),
                    [
                        {
                            "routing_key": e.routing_key,
                            "uuid_string": e.uuid_string,
                            "payload": e.payload,
                        }
                        for e in entries
                    ],
                )
            command = [
                RELAY,
                "--database-url",
                database_url,
                "--url",
                amqp_url,
                "--once",
                "--batch-size",
                str(args.batch_size),
            ]
            started = time.monotonic()
            processes = [
                subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
                for _ in range(relays)
            ]
            outputs = [process.communicate()[0] for process in processes]
            elapsed = time.monotonic() - started
            bodies = drain(amqp_url, queue)
            sent = {DomainEvent.from_json(body).uuid_string for body in bodies}
            expected = {entry.uuid_string for entry in entries}
            split = [int(out.split("relayed ")[1].split()[0]) for out in outputs]
            # Each relay's own figure: time spent in its batches (lock, publish, confirm, mark).
            own = [out.split("(")[-1].split(" events/s")[0] for out in outputs]
            print(
                f"{relays} relay(s), batches of {args.batch_size}: {args.rows} rows in "
                f"{elapsed:.2f} s including process start-up ({args.rows / elapsed:.0f} "
                f"events/s); rows per relay {split}, each at {'/'.join(own)} events/s; "
                f"duplicates {len(bodies) - len(sent)}; lost {len(expected - sent)}"
            )
    finally:
        engine.dispose()
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:  # type: ignore[arg-type]
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
