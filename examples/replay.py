"""Replay every dead-lettered event of the quick start's subscriber ``sync_data``.

Run: `python examples/replay.py` (the broker is $DOMAIN_EVENT_BROKER, else the
local one). `domain-events dead-letters replay sync_data --all` does the same.
"""

from domain_event_broker import replay_all

left = replay_all("sync_data")
print(f"{left} events left in the dead-letter queue")
