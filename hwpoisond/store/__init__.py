"""SQLite state: events, pages, actions, source cursors and metadata (see store.db)."""

from hwpoisond.store.db import (
    DB_FILENAME,
    PendingIntent,
    Recovery,
    Retention,
    RetiredPage,
    Store,
    StoreError,
    StoreMissingError,
)

__all__ = [
    "DB_FILENAME",
    "PendingIntent",
    "Recovery",
    "Retention",
    "RetiredPage",
    "Store",
    "StoreError",
    "StoreMissingError",
]
