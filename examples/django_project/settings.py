"""A minimal Django project that publishes and receives domain events.

SQLite by default; EXAMPLE_POSTGRES_DB=<database> uses the local PostgreSQL instead
(which several relays can share: SELECT ... FOR UPDATE SKIP LOCKED).
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

SECRET_KEY = "example-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "domain_event_broker.django",  # publish_on_commit, the outbox and the commands
    "shop",
]

if os.environ.get("EXAMPLE_POSTGRES_DB"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("EXAMPLE_POSTGRES_HOST", "127.0.0.1"),
            "USER": os.environ.get("EXAMPLE_POSTGRES_USER", "postgres"),
            "NAME": os.environ["EXAMPLE_POSTGRES_DB"],
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("EXAMPLE_SQLITE_PATH", str(HERE / "db.sqlite3")),
        }
    }

# The AMQP URL of RabbitMQ; None sends nothing (and fails nothing), e.g. in tests.
DOMAIN_EVENT_BROKER = (
    os.environ.get("DOMAIN_EVENT_BROKER", "amqp://guest:guest@localhost:5672/%2F") or None
)
# publish_on_commit writes to the transactional outbox; relay_domain_events sends it.
DOMAIN_EVENT_BROKER_OUTBOX = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"domain_event_broker": {"handlers": ["console"], "level": "WARNING"}},
}
