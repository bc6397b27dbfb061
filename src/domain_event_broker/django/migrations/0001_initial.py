"""The outbox (``domain_event_outbox``) and the inbox (``domain_event_inbox``)."""

from __future__ import annotations

from typing import Any

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations: list[Any] = [
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("routing_key", models.CharField(max_length=255)),
                ("uuid_string", models.CharField(max_length=64)),
                ("payload", models.TextField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "outbox event",
                "db_table": "domain_event_outbox",
                "indexes": [
                    models.Index(fields=["sent_at", "id"], name="domain_event_outbox_pending")
                ],
            },
        ),
        migrations.CreateModel(
            name="ProcessedEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("subscriber", models.CharField(max_length=255)),
                ("uuid_string", models.CharField(max_length=64)),
                ("processed_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "processed event",
                "db_table": "domain_event_inbox",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("subscriber", "uuid_string"), name="domain_event_inbox_once"
                    )
                ],
            },
        ),
    ]
