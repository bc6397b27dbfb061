from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=100)


class HandledEvent(models.Model):
    """One run of a handler: what the tests count to see duplicates."""

    subscriber = models.CharField(max_length=100)
    uuid_string = models.CharField(max_length=64)
    routing_key = models.CharField(max_length=255)
    data = models.JSONField()
