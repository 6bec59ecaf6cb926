"""What the credit operations return. Plain frozen values: the bot pattern-matches on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Balance:
    team_id: str
    balance: int
    reserved: int  # held for answers in progress
    available: int  # balance - reserved: what new answers can use (negative after a reversal)


@dataclass(frozen=True)
class Reservation:
    id: str
    team_id: str
    amount: int


@dataclass(frozen=True)
class Insufficient:
    team_id: str
    balance: int
    available: int
    needed: int


@dataclass(frozen=True)
class Settlement:
    reservation_id: str
    charged: int  # what this reservation cost; on a repeated settle, what the first one charged
    balance_after: int
    low_balance: bool  # True once, on the settlement that took the balance below the threshold
    already_settled: bool  # True when this call changed nothing (settled before, or released)


@dataclass(frozen=True)
class AnswerUsage:
    """What an answer consumed and where it was asked: recorded with its charge, for reports and exports."""

    model: str
    channel_id: str | None
    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, model: str, channel_id: str | None, tokens) -> AnswerUsage:
        """From a TokenUsage (what Claude reported, or the record's estimate)."""
        return cls(
            model=model,
            channel_id=channel_id,
            input_tokens=tokens.input_tokens,
            cache_creation_input_tokens=tokens.cache_creation_input_tokens,
            cache_read_input_tokens=tokens.cache_read_input_tokens,
            output_tokens=tokens.output_tokens,
        )


@dataclass(frozen=True)
class GrantResult:
    applied: bool  # False when (source, external_id) had already been recorded
    balance: int


@dataclass(frozen=True)
class UsageSummary:
    total: int
    answers: int
    by_user: list[tuple[str | None, int]]  # top users by credits, desc; (None, n) last sums everyone else


@dataclass(frozen=True)
class UsageBreakdown:
    """A period's answers by person and by channel: (id, credits, answers), dearest first."""

    since: datetime
    total: int
    answers: int
    by_user: list[tuple[str | None, int, int]]
    by_channel: list[tuple[str | None, int, int]]


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    team_id: str
    kind: str
    amount: int
    balance_after: int
    user_id: str | None
    source: str
    external_id: str
    memo: str | None
    created_at: datetime
