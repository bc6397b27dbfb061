"""Replay every dead-lettered event of the example subscriber ``sync_data``."""

import os

from domain_event_broker import replay_all

left = replay_all("sync_data", connection_settings=os.environ.get("DOMAIN_EVENT_BROKER", ""))
print(f"{left} events left in the dead-letter queue")
