"""What an outbox relay did: counted by the relay and its batch sender, read by logs and probes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RelayStats:
    """What a relay did, for logs, the commands' last line and benchmarks."""

    relayed: int = 0
    batches: int = 0
    failed_attempts: int = 0
    deleted: int = 0
    seconds: float = 0.0
    #: Refusals of single events (each row counted once per refusal).
    refused: int = 0
    #: Rows parked after their last refusal.
    parked: int = 0

    @property
    def events_per_second(self) -> float:
        return self.relayed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"relayed {self.relayed} events in {self.batches} batches in {self.seconds:.1f} s "
            f"({self.events_per_second:.0f} events/s); {self.failed_attempts} failed attempts, "
            f"{self.refused} refused events, {self.parked} parked, "
            f"{self.deleted} old sent rows deleted"
        )
