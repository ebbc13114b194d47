"""Helpers the parser tests share."""

from __future__ import annotations

from typing import Any

from hwpoisond.core.model import Event
from hwpoisond.parse import event_to_json


def without_time(events: list[Event]) -> list[dict[str, Any]]:
    """Events as `hwpoisond parse` prints them, less `time` and `line` (which depend on the
    prefix and the input position, not on the message)."""
    out = []
    for e in events:
        obj = event_to_json(e)
        del obj["time"], obj["line"]
        out.append(obj)
    return out
