"""The TLS node fixture: one throw-away RabbitMQ node per test session, on ports 5692/5693."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rabbit_tls import TlsNode, running_tls_node

from faults.rabbit_cluster import find_sbin


@pytest.fixture(scope="session")
def tls_node() -> Iterator[TlsNode]:
    sbin = find_sbin()
    if sbin is None or not (sbin / "rabbitmq-server").exists():
        pytest.skip("no RabbitMQ server scripts here (set $RABBITMQ_SBIN)")
    with running_tls_node(sbin) as node:
        yield node
