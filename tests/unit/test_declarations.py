"""What a subscriber declares, in which order and with which arguments (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.rabbitmq import (
    TRANSIENT_QUEUE_LEASE_MS,
    UNKNOWN,
    RabbitMQVersion,
    regex_literal,
)
from domain_event_broker.core.topology import (
    Bind,
    ExchangeDeclare,
    Operation,
    QueueDeclare,
    QueueType,
    SubscriberTopology,
    registration_topology,
)

KEYS = ("order.*", "invoice.#")
EVENTS = ExchangeDeclare("domain-events", "topic", durable=True)


def binds(queue: str, exchange: str) -> list[Operation]:
    return [Bind(queue, exchange, key) for key in KEYS]


def test_a_classic_subscriber_declares_its_queue_and_retry_exchange() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS)
    assert not topology.durable_exchanges
    assert topology.declarations() == [
        EVENTS,
        QueueDeclare("orders", durable=True, exclusive=False, auto_delete=False, arguments=None),
        *binds("orders", "domain-events"),
        ExchangeDeclare("orders-retry", "topic", durable=False),
        *binds("orders", "orders-retry"),
    ]


def test_a_dead_letter_subscriber_declares_its_dead_letter_exchange_and_queue_first() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS, dead_letter=True)
    assert topology.declarations() == [
        EVENTS,
        ExchangeDeclare("orders-dlx", "topic", durable=False),
        QueueDeclare("orders-dl", durable=True, arguments=None),
        *binds("orders-dl", "orders-dlx"),
        QueueDeclare("orders", durable=True, arguments={"x-dead-letter-exchange": "orders-dlx"}),
        *binds("orders", "domain-events"),
        ExchangeDeclare("orders-retry", "topic", durable=False),
        *binds("orders", "orders-retry"),
    ]


def test_a_quorum_subscriber_declares_quorum_queues_and_durable_exchanges() -> None:
    topology = SubscriberTopology(
        name="orders", binding_keys=KEYS, dead_letter=True, queue_type="quorum"
    )
    assert topology.durable_exchanges
    assert topology.declarations() == [
        EVENTS,
        ExchangeDeclare("orders-dlx", "topic", durable=True),
        QueueDeclare("orders-dl", durable=True, arguments={"x-queue-type": "quorum"}),
        *binds("orders-dl", "orders-dlx"),
        QueueDeclare(
            "orders",
            durable=True,
            arguments={"x-dead-letter-exchange": "orders-dlx", "x-queue-type": "quorum"},
        ),
        *binds("orders", "domain-events"),
        ExchangeDeclare("orders-retry", "topic", durable=True),
        *binds("orders", "orders-retry"),
    ]


def test_a_quorum_subscriber_without_dead_letters() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=("order.*",), queue_type="quorum")
    assert topology.declarations() == [
        EVENTS,
        QueueDeclare("orders", durable=True, arguments={"x-queue-type": "quorum"}),
        Bind("orders", "domain-events", "order.*"),
        ExchangeDeclare("orders-retry", "topic", durable=True),
        Bind("orders", "orders-retry", "order.*"),
    ]


def test_queue_options_and_another_events_exchange_are_declared_as_given() -> None:
    topology = SubscriberTopology(
        name="tmp",
        binding_keys=("a.b",),
        exchange="other-events",
        exchange_type="direct",
        durable=False,
        exclusive=True,
        auto_delete=True,
    )
    assert topology.declarations() == [
        ExchangeDeclare("other-events", "direct", durable=True),
        QueueDeclare("tmp", durable=False, exclusive=True, auto_delete=True, arguments=None),
        Bind("tmp", "other-events", "a.b"),
        ExchangeDeclare("tmp-retry", "direct", durable=False),
        Bind("tmp", "tmp-retry", "a.b"),
    ]


@given(
    keys=st.lists(st.sampled_from(["a.*", "b.#", "c.d", "#"]), min_size=1, max_size=6),
    dead_letter=st.booleans(),
    queue_type=st.sampled_from(["classic", "quorum"]),
)
def test_every_binding_comes_after_its_queue_and_exchange(
    keys: list[str], dead_letter: bool, queue_type: QueueType
) -> None:
    topology = SubscriberTopology(
        name="orders", binding_keys=tuple(keys), dead_letter=dead_letter, queue_type=queue_type
    )
    operations = topology.declarations()
    exchanges: set[str] = set()
    queues: set[str] = set()
    bound = []
    for operation in operations:
        if isinstance(operation, ExchangeDeclare):
            exchanges.add(operation.name)
        elif isinstance(operation, QueueDeclare):
            queues.add(operation.name)
        else:
            assert operation.queue in queues, operation
            assert operation.exchange in exchanges, operation
            bound.append((operation.queue, operation.exchange, operation.routing_key))
    expected_exchanges = {"domain-events", "orders-retry"} | (
        {"orders-dlx"} if dead_letter else set()
    )
    expected_queues = {"orders"} | ({"orders-dl"} if dead_letter else set())
    assert exchanges == expected_exchanges
    assert queues == expected_queues
    pairs = [("orders", "domain-events"), ("orders", "orders-retry")]
    if dead_letter:
        pairs.insert(0, ("orders-dl", "orders-dlx"))
    assert bound == [(queue, exchange, key) for queue, exchange in pairs for key in keys]
    assert operations[0] == EVENTS


def test_a_wait_queue_dead_letters_through_the_default_exchange_to_the_queue() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS)
    assert topology.wait_queue_declaration(1500) == QueueDeclare(
        "orders-wait-1500",
        durable=True,
        exclusive=False,
        auto_delete=False,
        arguments={
            "x-message-ttl": 1500,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "orders",
        },
    )


def test_a_quorum_wait_queue_dead_letters_at_least_once() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS, queue_type="quorum")
    assert topology.wait_queue_declaration(0) == QueueDeclare(
        "orders-wait-0",
        durable=True,
        arguments={
            "x-message-ttl": 0,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "orders",
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


# Registration -------------------------------------------------------------------


def test_registration_refuses_a_negative_max_retries() -> None:
    with pytest.raises(ValueError, match=r"max_retries must be >= 0, got -1"):
        registration_topology(
            "orders", ["order.*"], max_retries=-1, registered=[], kind=SubscriberTopology
        )


def test_registration_refuses_a_name_already_registered() -> None:
    with pytest.raises(ValueError, match="'orders' is already registered"):
        registration_topology(
            "orders",
            ["order.*"],
            max_retries=0,
            registered=["mailer", "orders"],
            kind=SubscriberTopology,
        )


def test_registration_takes_a_lone_binding_key_as_one_key() -> None:
    topology = registration_topology(
        "orders", "order.*", max_retries=0, registered=["mailer"], kind=SubscriberTopology
    )
    assert topology.binding_keys == ("order.*",)


def test_registration_builds_the_drivers_kind_with_the_options() -> None:
    class DriverTopology(SubscriberTopology):
        pass

    topology = registration_topology(
        "orders",
        ["order.*", "invoice.#"],
        max_retries=2,
        registered=(),
        kind=DriverTopology,
        dead_letter=True,
        queue_type="quorum",
    )
    assert type(topology) is DriverTopology
    assert topology == DriverTopology(
        name="orders", binding_keys=KEYS, dead_letter=True, queue_type="quorum"
    )


# What differs on RabbitMQ 4.x ------------------------------------------------------------

RABBITMQ_3 = RabbitMQVersion.reported({"version": b"3.13.7"})
RABBITMQ_4 = RabbitMQVersion.reported({"version": b"4.0.5"})


@given(
    major=st.integers(0, 99),
    minor=st.integers(0, 99),
    patch=st.integers(0, 99),
    suffix=st.sampled_from(["", "-rc.1", "+1.g1234"]),
)
def test_the_version_is_read_from_what_the_node_reports(
    major: int, minor: int, patch: int, suffix: str
) -> None:
    text = f"{major}.{minor}.{patch}{suffix}"
    for reported in (text, text.encode()):
        version = RabbitMQVersion.reported({"version": reported})
        assert (version.major, version.minor, version.patch) == (major, minor, patch)
        assert str(version) == f"{major}.{minor}.{patch}"
        assert version.limits_quorum_deliveries == (major >= 4)


@pytest.mark.parametrize("properties", [None, {}, {"version": None}, {"version": b"x.y"}])
def test_a_node_that_names_no_version_gets_the_3x_rules(properties: object) -> None:
    version = RabbitMQVersion.reported(properties)  # type: ignore[arg-type]
    assert version == UNKNOWN and not version.limits_quorum_deliveries
    assert "unknown" in str(version)


@given(dead_letter=st.booleans(), durable=st.booleans(), auto_delete=st.booleans())
def test_rabbitmq_3_gets_what_releases_before_declared(
    dead_letter: bool, durable: bool, auto_delete: bool
) -> None:
    topology = SubscriberTopology(
        name="orders",
        binding_keys=KEYS,
        dead_letter=dead_letter,
        durable=durable,
        auto_delete=auto_delete,
    )
    assert topology.declarations(RABBITMQ_3) == topology.declarations()
    for operation in topology.declarations(RABBITMQ_3):
        assert not isinstance(operation, QueueDeclare) or operation.previous is None


def test_quorum_queues_on_rabbitmq_4_keep_an_event_however_often_it_returns() -> None:
    topology = SubscriberTopology(
        name="orders", binding_keys=KEYS, dead_letter=True, queue_type="quorum"
    )
    older = {op.name: op for op in topology.declarations() if isinstance(op, QueueDeclare)}
    queues = [op for op in topology.declarations(RABBITMQ_4) if isinstance(op, QueueDeclare)]
    assert [queue.name for queue in queues] == ["orders-dl", "orders"]
    for queue in queues:
        assert queue.arguments is not None
        assert queue.arguments["x-delivery-limit"] == -1
        assert queue.arguments["x-queue-type"] == "quorum"
        # A queue an older release declared is used as it is, never re-declared.
        assert queue.previous == older[queue.name]
        assert "set_policy" in queue.after_previous and "delivery-limit" in queue.after_previous


def test_a_transient_queue_on_rabbitmq_4_is_durable_with_a_lease() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS, durable=False)
    [queue] = [op for op in topology.declarations(RABBITMQ_4) if isinstance(op, QueueDeclare)]
    assert queue.durable and not queue.exclusive
    assert queue.arguments == {"x-expires": TRANSIENT_QUEUE_LEASE_MS}
    assert queue.previous is not None and not queue.previous.durable
    exclusive = SubscriberTopology(name="mine", binding_keys=KEYS, durable=False, exclusive=True)
    [queue] = [op for op in exclusive.declarations(RABBITMQ_4) if isinstance(op, QueueDeclare)]
    assert not queue.durable and queue.exclusive  # exclusive transient queues are fine on 4.x


def test_the_older_form_is_used_instead_and_the_operator_told_once() -> None:
    topology = SubscriberTopology(name="orders", binding_keys=KEYS, queue_type="quorum")
    [queue] = [op for op in topology.declarations(RABBITMQ_4) if isinstance(op, QueueDeclare)]
    assert topology.instead_of(queue) == queue.previous
    assert topology.advice_after(queue) == queue.after_previous
    assert topology.advice_after(queue) is None  # told once, not at every reconnect
    assert topology.instead_of(EVENTS) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")))
def test_a_name_in_an_operators_regex_matches_itself_alone(name: str) -> None:
    import re

    pattern = regex_literal(name)
    assert re.fullmatch(pattern, name)
    assert not re.fullmatch(pattern, name + "x")
