"""How an ordered subscriber's partitions spread over its processes, and move: the decisions.

Single active consumer alone does not spread work: the first consumer of a
partition is its active one. So each process consumes only the partitions that
are its share, and the processes agree on the shares through the broker alone:

- every process of subscriber ``N`` has an exclusive queue ``N-member-<id>``
  bound to the fanout exchange ``N-members`` and says ``alive <id>`` there every
  :data:`HEARTBEAT_INTERVAL` seconds (``leave <id>`` when it stops);
- a process that joins listens for :data:`LISTEN` seconds before it takes any;
- the members are the ids heard within :data:`MEMBER_TIMEOUT` seconds (a process
  SIGKILLed is gone from the others' view that long after its last word);
- :func:`assignment` gives every member ⌊P/K⌋ or ⌈P/K⌉ of the P partitions, the
  same in every process that sees the same members.

A process takes the partitions that became its own at once (as a waiting
consumer while their last owner still holds them). One that lost partitions
releases them by ending its session without ``basic.cancel`` (see the drivers):
RabbitMQ returns the unacked events ahead of the later ones and activates the
next consumer, so no event of an object overtakes an earlier one. Views that
differ for a moment cost a wait, never order: a partition has one active
consumer whatever the processes think.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Seconds between two ``alive`` words of a process.
HEARTBEAT_INTERVAL = 0.5
#: Seconds after its last word that a process is no member any more (SIGKILL: its
#: partitions move this long after it died, plus a heartbeat).
MEMBER_TIMEOUT = 3.0
#: Seconds between two looks at the members (and a heartbeat when due).
TICK = 0.25
#: Seconds a process that joins listens before it takes partitions: long enough to
#: hear every member twice, so that it does not take all and give most back at once.
LISTEN = 2 * HEARTBEAT_INTERVAL + TICK
ALIVE = "alive"
LEAVING = "leave"
#: What names a subscriber's membership exchange, and each process's queue on it.
MEMBERS_EXCHANGE_SUFFIX = "-members"
MEMBER_QUEUE_INFIX = "-member-"


def members_exchange_name(subscriber: str) -> str:
    return f"{subscriber}{MEMBERS_EXCHANGE_SUFFIX}"


def member_queue_name(subscriber: str, member: str) -> str:
    return f"{subscriber}{MEMBER_QUEUE_INFIX}{member}"


def new_member_id(pid: int, random_part: str) -> str:
    """A process's id among the members: its pid (for operators) and a random part."""
    return f"{pid}.{random_part}"


def membership_of(
    memberships: dict[str, Membership], name: str, partitions: int, now: float
) -> Membership:
    """Subscriber ``name``'s view of its members, made once per process (and kept in
    ``memberships`` from one session to the next)."""
    membership = memberships.get(name)
    if membership is None:
        me = new_member_id(os.getpid(), secrets.token_hex(4))
        membership = memberships[name] = Membership(me, partitions, now)
    return membership


def word(kind: str, member: str) -> bytes:
    """The body a process publishes to the membership exchange."""
    return f"{kind} {member}".encode()


def read_word(body: bytes) -> tuple[str, str] | None:
    """``(kind, member)`` of a membership word; None for anything else (ignored)."""
    try:
        kind, member = body.decode("ascii").split(" ")
    except ValueError:
        return None
    if kind not in (ALIVE, LEAVING) or not member:
        return None
    return kind, member


def _rank(member: str, partition: int) -> bytes:
    # The same in every process and every Python (no hash randomisation).
    return hashlib.blake2b(f"{partition}/{member}".encode(), digest_size=8).digest()


def assignment(members: Iterable[str], partitions: int) -> dict[str, frozenset[int]]:
    """Which partitions each member consumes: ⌊P/K⌋ or ⌈P/K⌉ each, every one once.

    Rendezvous hashing with room: the (member, partition) pairs are taken best rank
    first, each while its partition is free and its member has room; so a change
    of members moves few partitions.

    >>> shares = assignment(["a", "b", "c"], 8)
    >>> sorted(len(mine) for mine in shares.values()), sorted(set().union(*shares.values()))
    ([2, 3, 3], [0, 1, 2, 3, 4, 5, 6, 7])
    """
    ordered = sorted(set(members))
    if not ordered:
        return {}
    share, extra = divmod(partitions, len(ordered))
    owned: dict[str, set[int]] = {member: set() for member in ordered}
    free = set(range(partitions))
    bigger = 0  # members holding share + 1 (only ``extra`` may)
    pairs = sorted(
        ((_rank(member, partition), member, partition) for member in ordered for partition in free),
        reverse=True,
    )
    for _, member, partition in pairs:
        held = len(owned[member])
        if partition not in free or held > share or (held == share and bigger >= extra):
            continue
        owned[member].add(partition)
        free.discard(partition)
        if held == share:
            bigger += 1
    return {member: frozenset(mine) for member, mine in owned.items()}


@dataclass
class Membership:
    """One process's view of the members of an ordered subscriber, and its share."""

    me: str
    partitions: int
    #: When this process joined (monotonic seconds): it takes no partition for LISTEN.
    joined: float = 0.0
    timeout: float = MEMBER_TIMEOUT
    interval: float = HEARTBEAT_INTERVAL
    #: When each other member was last heard (monotonic seconds).
    _heard: dict[str, float] = field(default_factory=dict)
    _next_heartbeat: float = 0.0
    _shares: tuple[tuple[str, ...], frozenset[int]] = ((), frozenset())

    def heard(self, body: bytes, now: float) -> None:
        said = read_word(body)
        if said is None or said[1] == self.me:
            return
        kind, member = said
        if kind == ALIVE:
            self._heard[member] = now
        else:
            self._heard.pop(member, None)

    def members(self, now: float) -> tuple[str, ...]:
        for member, at in list(self._heard.items()):
            if now - at > self.timeout:
                del self._heard[member]
        return tuple(sorted({self.me, *self._heard}))

    def mine(self, now: float) -> frozenset[int]:
        """The partitions this process consumes now (none while it listens after joining)."""
        if now < self.joined + LISTEN:
            return frozenset()
        members = self.members(now)
        if self._shares[0] != members:  # the same members: the same share
            self._shares = (members, assignment(members, self.partitions)[self.me])
        return self._shares[1]

    def heartbeat_due(self, now: float) -> bool:
        """Whether to say ``alive`` now (then it is not due again for an interval)."""
        if now < self._next_heartbeat:
            return False
        self._next_heartbeat = now + self.interval
        return True


@dataclass(frozen=True)
class Change:
    """What a process does about its partitions: take some, or release some."""

    take: frozenset[int]
    #: Partitions it consumes that are another's now: its session ends to release them.
    release: frozenset[int]


def change(consumed: Iterable[int], mine: frozenset[int]) -> Change:
    """From the partitions consumed now to this process's share."""
    now = frozenset(consumed)
    return Change(take=mine - now, release=now - mine)
