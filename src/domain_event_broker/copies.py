"""The pika properties of a re-published copy of a delivery (retry, dead letter, replay).

Which properties a copy keeps is the core's rule (:mod:`.core.copies`).
"""

from __future__ import annotations

from typing import Any

import pika

from .core.copies import COPIED_PROPERTIES, copied_fields

__all__ = ["COPIED_PROPERTIES", "copied_fields", "copy_properties"]


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any]
) -> pika.BasicProperties:
    """The properties of a re-published copy (see :func:`.core.copies.copied_fields`)."""
    return pika.BasicProperties(**copied_fields(properties, headers))
