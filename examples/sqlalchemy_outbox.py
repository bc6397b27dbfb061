"""The transactional outbox and an idempotent handler with SQLAlchemy (Flask, FastAPI, scripts).

    python examples/sqlalchemy_outbox.py

DATABASE_URL picks the database (default: an SQLite file in a temporary directory),
DOMAIN_EVENT_BROKER the broker (default: the local RabbitMQ). In a real deployment the
relay is its own process: `domain-events-relay --database-url "$DATABASE_URL"`.
"""

import os
import tempfile
import uuid

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from domain_event_broker import DomainEvent, Subscriber
from domain_event_broker.sqlalchemy import add_event, idempotent, metadata, relay_events

database_url = os.environ.get("DATABASE_URL") or (
    f"sqlite:///{tempfile.mkdtemp(prefix='deb-example-')}/shop.sqlite3"
)
broker_url = os.environ.get("DOMAIN_EVENT_BROKER", "amqp://guest:guest@localhost:5672/%2F")
run = uuid.uuid4().hex[:8]  # so that repeated runs do not share queues or keys

app_metadata = MetaData()
orders = Table(
    "example_orders",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(100), nullable=False),
)
mails = Table(
    "example_mails",
    app_metadata,
    Column("id", Integer, primary_key=True),
    Column("order_reference", String(100), nullable=False),
)

# --8<-- [start:outbox]
engine = create_engine(database_url)
metadata.create_all(engine)  # the outbox and inbox tables (or add them to your Alembic metadata)
app_metadata.create_all(engine)
Session_ = sessionmaker(engine)


# 1. Business code: the order and its event commit together, or neither does.
def place_order(reference: str) -> DomainEvent:
    with Session_() as session, session.begin():
        session.execute(orders.insert().values(reference=reference))
        return add_event(session, f"example{run}.order.placed", {"reference": reference})


# --8<-- [end:outbox]


# --8<-- [start:inbox]
# 2. An idempotent handler: its writes and the inbox record commit together.
@idempotent(Session_, f"example-mailer-{run}")
def send_confirmation_mail(event: DomainEvent, session: Session) -> None:
    session.execute(mails.insert().values(order_reference=event.data["reference"]))
    print(f"  mail sent for {event.data['reference']} (event {event.uuid_string[:8]})")


subscriber = Subscriber(broker_url, handle_signals=False)
subscriber.register(
    send_confirmation_mail, f"example-mailer-{run}", [f"example{run}.order.*"], auto_delete=True
)
# --8<-- [end:inbox]

events = [place_order(f"order-{n}") for n in range(3)]
print(f"placed 3 orders in {engine.url.render_as_string(hide_password=True)}")

# 3. The relay publishes pending rows in order, with confirms, and marks them sent.
#    (As a service: domain-events-relay --database-url ...; several may run at once.)
stats = relay_events(engine, broker_url, once=True)
print(f"relay: {stats.summary()}")

# 4. The handler receives them; a redelivered event (a relay that died before marking
#    its batch sent re-sends it) is skipped.
subscriber.start_consuming(timeout=2.0)
send_confirmation_mail(events[0])
with Session_() as session:
    sent = session.execute(select(func.count()).select_from(mails)).scalar_one()
print(f"{sent} mails for 3 orders; the redelivered event for order-0 was skipped")
engine.dispose()
