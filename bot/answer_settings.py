"""What workspace admins chose for answers: the model, the system prompt and web search, for the whole workspace
and per channel. A channel's choice overrides the workspace's, which overrides CLAUDE_MODEL and SYSTEM_PROMPT;
every change is audited (who, what, from what to what, when) and takes effect at the next question."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.tables import answer_settings, answer_settings_audit

WORKSPACE = ""  # the channel_id of the workspace's own row
SETTINGS = ("model", "system_prompt", "web_search")
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class AnswerChoice:
    """What a question in a channel is answered with."""

    model: str
    system_prompt: str
    web_search: bool


@dataclass(frozen=True)
class Change:
    channel_id: str
    setting: str
    old_value: str | None
    new_value: str | None
    changed_by: str
    changed_at: datetime


class AnswerSettings:
    def __init__(self, engine: AsyncEngine, *, default_model: str, default_prompt: str, clock: Callable[[], datetime]):
        self._engine = engine
        self.defaults = AnswerChoice(default_model, default_prompt, False)
        self._clock = clock

    async def effective(self, team_id: str, channel_id: str, *, connection: AsyncConnection) -> AnswerChoice:
        """Read inside the caller's transaction (the question's claim): one query."""
        c = answer_settings.c
        rows = (
            await connection.execute(
                sa.select(c.channel_id, c.model, c.system_prompt, c.web_search).where(
                    c.team_id == team_id, c.channel_id.in_([WORKSPACE, channel_id])
                )
            )
        ).all()
        by_scope = {row.channel_id: row for row in rows}
        chosen = {}
        for setting in SETTINGS:
            for scope in (channel_id, WORKSPACE):
                value = getattr(by_scope[scope], setting) if scope in by_scope else None
                if value is not None:
                    chosen[setting] = value
                    break
        return AnswerChoice(
            chosen.get("model", self.defaults.model),
            chosen.get("system_prompt", self.defaults.system_prompt),
            bool(chosen.get("web_search", self.defaults.web_search)),
        )

    async def change(
        self, team_id: str, channel_id: str | None, setting: str, value: str | bool | None, *, by: str
    ) -> Change | None:
        """Set (or, with None, reset to what applies above) one setting; None when it already was so."""
        changes = await self.change_many(team_id, channel_id, [(setting, value)], by=by)
        return changes[0] if changes else None

    async def change_many(
        self, team_id: str, channel_id: str | None, wanted: list[tuple[str, str | bool | None]], *, by: str
    ) -> list[Change]:
        """Several settings of one scope in one transaction, each audited; those already so are left out."""
        if unknown := [setting for setting, _ in wanted if setting not in SETTINGS]:
            raise ValueError(f"unknown settings {unknown}")
        scope = channel_id or WORKSPACE
        now = self._clock()
        c = answer_settings.c
        changes: list[Change] = []
        async with self._engine.begin() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            # The row first (a concurrent first change of the same scope in another process waits, then updates).
            await connection.execute(
                dialect.insert(answer_settings)
                .values(team_id=team_id, channel_id=scope, updated_by=by, updated_at=now)
                .on_conflict_do_nothing(index_elements=["team_id", "channel_id"])
            )
            row = (
                await connection.execute(
                    sa.select(answer_settings).where(c.team_id == team_id, c.channel_id == scope).with_for_update()
                )
            ).one()
            for setting, value in wanted:
                old = getattr(row, setting)
                if old == value:
                    continue
                changes.append(Change(scope, setting, _text(old), _text(value), by, now))
            if not changes:
                return []
            values = dict(wanted)
            await connection.execute(
                sa.update(answer_settings)
                .where(c.team_id == team_id, c.channel_id == scope)
                .values(**values, updated_by=by, updated_at=now)
            )
            await connection.execute(
                sa.insert(answer_settings_audit),
                [
                    {
                        "team_id": team_id,
                        "channel_id": scope,
                        "setting": change.setting,
                        "old_value": change.old_value,
                        "new_value": change.new_value,
                        "changed_by": by,
                        "changed_at": now,
                    }
                    for change in changes
                ],
            )
        return changes

    async def overview(self, team_id: str) -> dict[str, dict[str, str | bool]]:
        """What is set, by scope ("" for the workspace, then channels): only the settings chosen there."""
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(answer_settings)
                    .where(answer_settings.c.team_id == team_id)
                    .order_by(answer_settings.c.channel_id)
                )
            ).all()
        return {
            row.channel_id: {
                setting: getattr(row, setting) for setting in SETTINGS if getattr(row, setting) is not None
            }
            for row in rows
        }

    async def history(self, team_id: str, *, limit: int = 10) -> list[Change]:
        c = answer_settings_audit.c
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(answer_settings_audit).where(c.team_id == team_id).order_by(c.id.desc()).limit(limit)
                )
            ).all()
        return [
            Change(row.channel_id, row.setting, row.old_value, row.new_value, row.changed_by, row.changed_at)
            for row in rows
        ]


def _text(value: str | bool | None) -> str | None:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value
