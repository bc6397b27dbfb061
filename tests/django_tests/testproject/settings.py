"""Settings of the Django project the tests run (in-process and as real subprocesses).

The conftest sets the environment variables: a PostgreSQL database of the
session's own, an SQLite file, and the session's RabbitMQ vhost.
"""

import os

SECRET_KEY = "test-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "domain_event_broker.django",
    "testproject.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "testproject.urls"
ALLOWED_HOSTS = ["testserver"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("DEB_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DEB_TEST_PG_PORT", "5432"),
        "USER": os.environ.get("DEB_TEST_PG_USER", "postgres"),
        "NAME": os.environ.get("DEB_TEST_DB_NAME", "test"),
    },
    "sqlite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEB_TEST_SQLITE_PATH", "test.sqlite3"),
    },
}
DOMAIN_EVENT_BROKER: str | None = os.environ.get(
    "DEB_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
)
if DOMAIN_EVENT_BROKER == "none":  # a deployment whose broker setting is missing
    DOMAIN_EVENT_BROKER = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None
