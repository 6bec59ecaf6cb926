"""A wall clock that tests set by hand, for the code that takes an injectable `clock`."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    def __init__(self, now: datetime = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
