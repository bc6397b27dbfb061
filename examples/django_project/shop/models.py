from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=100, unique=True)
    email = models.EmailField()


class ConfirmationMail(models.Model):
    """What the handler does: one mail per order, however often the event comes."""

    order_reference = models.CharField(max_length=100)
    email = models.EmailField()
