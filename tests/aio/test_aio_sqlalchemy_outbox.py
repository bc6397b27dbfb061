"""``await add_event(async_session, ...)`` writes the outbox row that the relay publishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from domain_event_broker.aio.sqlalchemy import add_event
from domain_event_broker.errors import EventNotSerializable
from domain_event_broker.sqlalchemy import metadata, outbox_table, relay_events
from pg_database import create_database, drop_database, new_database_name, sqlalchemy_url
from support import get_all

from .helpers import delete_topology


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    name = new_database_name("aio")
    create_database(name)
    url = sqlalchemy_url(name)
    engine = create_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    yield url
    drop_database(name)


async def write(url: str, routing_key: str, data: object, commit: bool) -> str:
    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session:
            async with session.begin():
                event = await add_event(session, routing_key, data, "order-7")
                if not commit:
                    await session.rollback()
            return event.uuid_string or ""
    finally:
        await engine.dispose()


async def pending_rows(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(outbox_table)
                .where(outbox_table.c.sent_at.is_(None))
            )
            return int(count or 0)
    finally:
        await engine.dispose()


def test_a_committed_async_add_event_is_relayed(
    database_url: str, broker_url: str, name: str
) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare("domain-events", "topic", durable=True)
        channel.queue_declare(name, durable=True)
        channel.queue_bind(name, "domain-events", f"{name}.#")
    try:
        uuid_string = asyncio.run(write(database_url, f"{name}.placed", {"n": 1}, commit=True))
        asyncio.run(write(database_url, f"{name}.placed", {"n": 2}, commit=False))
        assert asyncio.run(pending_rows(database_url)) == 1
        relay_events(database_url, broker_url, once=True)
        [(_, properties, body)] = get_all(broker_url, name)
        event = json.loads(body)
        assert event["uuid_string"] == uuid_string == properties.message_id
        assert event["data"] == {"n": 1} and event["domain_object_id"] == "order-7"
        assert asyncio.run(pending_rows(database_url)) == 0
    finally:
        delete_topology(broker_url, name)


def test_a_bad_event_raises_before_anything_is_written(database_url: str) -> None:
    before = asyncio.run(pending_rows(database_url))
    with pytest.raises(EventNotSerializable):
        asyncio.run(write(database_url, "order.placed", {"at": object()}, commit=True))
    assert asyncio.run(pending_rows(database_url)) == before
