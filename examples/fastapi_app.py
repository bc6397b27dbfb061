"""A FastAPI service that publishes domain events and handles them beside the app.

Run it from the clone (``pip install 'domain-event-broker[fastapi]'`` installs what it
needs; broker: $DOMAIN_EVENT_BROKER or the local one)::

    uvicorn examples.fastapi_app:app
    curl -X POST localhost:8000/users -H 'content-type: application/json' -d '{"email": "a@b.c"}'
    curl localhost:8000/mails

- the lifespan opens one publisher for the app and starts a subscriber task;
- ``POST /users`` publishes ``user.registered`` and returns once RabbitMQ has it;
- the subscriber (``handle_signals=False``: uvicorn owns SIGTERM) sends the
  welcome mail; a mail that cannot go out is tried again a second later, twice,
  then the event goes to the dead-letter queue ``welcome-mailer-dl`` for an
  operator (``domain-events dead-letters list welcome-mailer``);
- on shutdown it finishes in-flight events, then the publisher closes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from domain_event_broker import DomainEvent, Retry
from domain_event_broker.aio import AsyncPublisher, AsyncSubscriber


class Registration(BaseModel):
    email: str


# --8<-- [start:app]
def create_app(broker_url: str = "", subscriber_name: str = "welcome-mailer") -> FastAPI:
    mails: list[str] = []

    async def send_welcome_mail(event: DomainEvent) -> None:
        if "@" not in event.data["email"]:
            # e.g. the mail server refused it: try again in a second (event.retries counts
            # the tries before); after max_retries the event is dead-lettered.
            raise Retry(1.0)
        mails.append(event.data["email"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        subscriber = AsyncSubscriber(broker_url, handle_signals=False, concurrency=4)
        subscriber.register(
            send_welcome_mail,
            subscriber_name,
            ["user.registered"],
            max_retries=2,  # the default, 0, would drop the event at its first Retry
            dead_letter=True,  # what still fails waits in <name>-dl, not dropped
        )
        await subscriber.declare()  # its queue exists before the first request
        consuming = asyncio.create_task(subscriber.run())
        async with AsyncPublisher(broker_url) as publisher:
            app.state.publisher = publisher
            yield
            await subscriber.stop()
            await consuming

    app = FastAPI(lifespan=lifespan)

    @app.post("/users", status_code=201)
    async def register_user(registration: Registration, request: Request) -> dict[str, str]:
        event = DomainEvent("user.registered", {"email": registration.email})
        await request.app.state.publisher.publish_event(event)
        return {"event_id": event.uuid_string or ""}

    @app.get("/mails")
    async def sent_mails() -> list[str]:
        return mails

    return app


# --8<-- [end:app]


app = create_app(os.environ.get("DOMAIN_EVENT_BROKER", ""))
