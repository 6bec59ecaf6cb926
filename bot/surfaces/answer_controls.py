"""The controls under an answer: a Stop button while it is written (the edit path; native streams have
Slack's own Stop), and Slack's feedback buttons once it is finished. Feedback is stored once per person and
answer (changing one's mind replaces it) and counted per workspace for the Home tab."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextActionsBlock,
    ContextBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    MarkdownTextObject,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.tables import answer_feedback

STOP_ACTION = "stop_answer"
FEEDBACK_ACTION = "answer_feedback"
FEEDBACK_BLOCK_PREFIX = "feedback:"
COST_BLOCK_PREFIX = "cost:"
RATINGS = ("good", "bad")


def stop_block(answer_id: str) -> dict:
    return ActionsBlock(
        block_id=f"stop:{answer_id}",
        elements=[ButtonElement(text="Stop", action_id=STOP_ACTION, value=answer_id, style="danger")],
    ).to_dict()


def feedback_block(answer_id: str) -> dict:
    return ContextActionsBlock(
        block_id=f"{FEEDBACK_BLOCK_PREFIX}{answer_id}",
        elements=[
            FeedbackButtonsElement(
                action_id=FEEDBACK_ACTION,
                positive_button=FeedbackButtonObject(
                    text="Good answer", value="good", accessibility_label="This answer was helpful"
                ),
                negative_button=FeedbackButtonObject(
                    text="Bad answer", value="bad", accessibility_label="This answer was not helpful"
                ),
            )
        ],
    ).to_dict()


def cost_block(answer_id: str, line: str) -> dict:
    return ContextBlock(block_id=f"{COST_BLOCK_PREFIX}{answer_id}", elements=[MarkdownTextObject(text=line)]).to_dict()


def answer_of_feedback(block_id: str | None) -> str | None:
    if isinstance(block_id, str) and block_id.startswith(FEEDBACK_BLOCK_PREFIX):
        return block_id.removeprefix(FEEDBACK_BLOCK_PREFIX) or None
    return None


@dataclass(frozen=True)
class FeedbackCounts:
    good: int
    bad: int


class FeedbackStore:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime]):
        self._engine = engine
        self._clock = clock
        self._insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert

    async def record(
        self, *, team_id: str, answer_id: str, user_id: str, rating: str, channel_id: str | None, message_ts: str | None
    ) -> None:
        if rating not in RATINGS:
            raise ValueError(f"unknown rating {rating!r}")
        now = self._clock()
        statement = self._insert(answer_feedback).values(
            answer_id=answer_id,
            user_id=user_id,
            team_id=team_id,
            channel_id=channel_id,
            message_ts=message_ts,
            rating=rating,
            created_at=now,
            updated_at=now,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["answer_id", "user_id"], set_={"rating": rating, "updated_at": now}
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def counts(self, team_id: str, *, since: datetime) -> FeedbackCounts:
        c = answer_feedback.c
        query = (
            sa.select(c.rating, sa.func.count()).where(c.team_id == team_id, c.updated_at >= since).group_by(c.rating)
        )
        async with self._engine.connect() as connection:
            found: dict[str, int] = dict((await connection.execute(query)).all())
        return FeedbackCounts(good=found.get("good", 0), bad=found.get("bad", 0))
