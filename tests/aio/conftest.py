from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from domain_event_broker.aio import AsyncSubscriber

from .helpers import delete_topology

MakeAsyncSubscriber = Callable[..., AsyncSubscriber]


@pytest.fixture
def make_async_subscriber(broker_url: str) -> Iterator[MakeAsyncSubscriber]:
    """Build AsyncSubscribers on the test vhost; delete every queue they registered afterwards."""
    made: list[AsyncSubscriber] = []

    def make(url: str | None = None, **options: Any) -> AsyncSubscriber:
        options.setdefault("handle_signals", False)
        subscriber = AsyncSubscriber(url or broker_url, **options)
        made.append(subscriber)
        return subscriber

    yield make
    names = {name for subscriber in made for name in subscriber.registered_names}
    delete_topology(broker_url, *names)
