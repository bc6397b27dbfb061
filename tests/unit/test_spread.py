"""How an ordered subscriber's partitions spread over its processes: the pure decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain_event_broker.core.spread import (
    ALIVE,
    LEAVING,
    LISTEN,
    Membership,
    assignment,
    change,
    read_word,
    word,
)

member_ids = st.sets(st.text("0123456789abcdef.", min_size=1, max_size=12), min_size=1, max_size=12)
partition_counts = st.integers(min_value=1, max_value=256)


@given(member_ids, partition_counts)
def test_every_partition_has_one_member_and_each_member_its_fair_share(
    members: set[str], partitions: int
) -> None:
    shares = assignment(members, partitions)
    assert set(shares) == members
    taken = [partition for mine in shares.values() for partition in mine]
    assert sorted(taken) == list(range(partitions))  # each once
    low, high = partitions // len(members), -(-partitions // len(members))
    assert all(low <= len(mine) <= high for mine in shares.values())


@given(member_ids, partition_counts)
def test_every_process_seeing_the_same_members_computes_the_same_shares(
    members: set[str], partitions: int
) -> None:
    assert assignment(sorted(members), partitions) == assignment(
        sorted(members, reverse=True), partitions
    )


@given(member_ids, st.integers(min_value=16, max_value=256))
def test_a_member_leaving_moves_its_partitions_and_few_others(
    members: set[str], partitions: int
) -> None:
    before = assignment(members, partitions)
    gone = sorted(members)[0]
    after = assignment(members - {gone}, partitions) if len(members) > 1 else {}
    moved = sum(len(before[member] - mine) for member, mine in after.items())
    # Rendezvous hashing with room: most of what stays with the survivors stays put.
    assert moved <= max(2, partitions // 4)


def test_a_process_that_joins_listens_before_it_takes_partitions() -> None:
    membership = Membership("me", 8, joined=10.0)
    membership.heard(word(ALIVE, "other"), now=10.4)
    assert membership.mine(10.5) == frozenset()
    assert len(membership.mine(10.0 + LISTEN)) == 4


def test_members_are_those_heard_within_the_timeout() -> None:
    membership = Membership("me", 8, timeout=5.0)
    membership.heard(word(ALIVE, "other"), now=100.0)
    membership.heard(word(ALIVE, "me"), now=100.0)  # its own word changes nothing
    assert membership.members(104.0) == ("me", "other")
    assert len(membership.mine(104.0)) == 4
    assert membership.members(105.5) == ("me",)  # SIGKILLed: silent for longer than 5 s
    assert membership.mine(105.5) == frozenset(range(8))


def test_a_member_that_says_it_leaves_is_gone_at_once() -> None:
    membership = Membership("me", 4)
    membership.heard(word(ALIVE, "other"), now=1.0)
    membership.heard(word(LEAVING, "other"), now=1.1)
    assert membership.members(1.2) == ("me",)


@given(st.binary(max_size=40))
def test_anything_else_on_the_members_exchange_is_ignored(body: bytes) -> None:
    membership = Membership("me", 4)
    said = read_word(body)
    membership.heard(body, now=0.0)
    assert said is not None or membership.members(0.0) == ("me",)


def test_a_heartbeat_is_due_once_an_interval() -> None:
    membership = Membership("me", 4, interval=1.0)
    assert membership.heartbeat_due(0.0)
    assert not membership.heartbeat_due(0.5)
    assert membership.heartbeat_due(1.0)


def test_a_change_takes_new_partitions_and_releases_lost_ones() -> None:
    assert change({0, 1, 2}, frozenset({1, 2, 3})).take == {3}
    assert change({0, 1, 2}, frozenset({1, 2, 3})).release == {0}
    assert not change({1}, frozenset({1})).release
