"""Conversation history, kept in the bot's own database.

Slack lets apps outside the Marketplace read a thread once a minute, so the bot cannot rebuild
context from Slack on every message. Every turn it takes part in is stored here, keyed by
workspace, channel and thread; Slack is read only for a thread the bot has never been part of.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.attachments import shared_files
from bot.attachments.kinds import estimate_tokens as estimate_file_tokens
from bot.claude_stream import estimate_tokens
from bot.slack_errors import slack_error
from bot.tables import conversation_turns

log = logging.getLogger(__name__)

# Enough rows to fill any sensible token budget, without reading a years-long DM.
MAX_ROWS = 400
# A thread the bot joins is read in pages of what Slack gives apps outside the Marketplace, up to about MAX_ROWS.
THREAD_PAGE = 15
MAX_THREAD_PAGES = 27


@dataclass(frozen=True)
class ThreadKey:
    team_id: str
    channel_id: str
    thread_ts: str  # "" for a DM's top level, which is one running conversation


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    # The files the turn shared, as references (bot.attachments.SharedFile records, with "tokens" once read):
    # follow-ups fetch them from Slack again and show them to Claude where they were shared.
    files: tuple[dict, ...] = ()

    @property
    def tokens(self) -> int:
        files = sum(int(file.get("tokens") or file.get("estimate") or 0) for file in self.files)
        return estimate_tokens(self.content) + files


def trim_to_budget(turns: list[Turn], token_budget: int) -> list[Turn]:
    """The newest turns that fit in the budget, starting with a user turn as the API requires. A turn whose files
    do not fit any more is kept without them (its text says which), so that what was said about them stays."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(turns):
        if used + turn.tokens > token_budget and turn.files:
            names = ", ".join(str(file.get("name") or "a file") for file in turn.files)
            turn = Turn(turn.role, f"{turn.content}\n(shared earlier, no longer shown: {names})")
        if used + turn.tokens > token_budget:
            break
        kept.append(turn)
        used += turn.tokens
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)
    return kept


def merge_consecutive(turns: list[Turn]) -> list[Turn]:
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, f"{merged[-1].content}\n\n{turn.content}", merged[-1].files + turn.files)
        else:
            merged.append(turn)
    return merged


class ConversationHistory:
    def __init__(self, engine: AsyncEngine, *, token_budget: int, clock: Callable[[], datetime]):
        self._engine = engine
        self._token_budget = token_budget
        self._clock = clock

    def _where(self, key: ThreadKey):
        c = conversation_turns.c
        return (c.team_id == key.team_id) & (c.channel_id == key.channel_id) & (c.thread_ts == key.thread_ts)

    async def load(self, key: ThreadKey) -> list[Turn] | None:
        """The conversation so far, trimmed to the token budget; None when the bot was never part of it."""
        c = conversation_turns.c
        query = select(c.role, c.content, c.files).where(self._where(key)).order_by(c.id.desc()).limit(MAX_ROWS)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        if not rows:
            return None
        turns = [Turn(role, content, tuple(files or ())) for role, content, files in reversed(rows)]
        return trim_to_budget(merge_consecutive(turns), self._token_budget)

    async def knows(self, key: ThreadKey) -> bool:
        query = select(conversation_turns.c.id).where(self._where(key)).limit(1)
        async with self._engine.connect() as connection:
            return (await connection.execute(query)).first() is not None

    async def append(self, connection: AsyncConnection, key: ThreadKey, turns: list[Turn]) -> None:
        """Inside the caller's transaction (the one that charges the answer)."""
        if not turns:
            return
        now = self._clock()
        rows = [
            {
                "team_id": key.team_id,
                "channel_id": key.channel_id,
                "thread_ts": key.thread_ts,
                "role": turn.role,
                "content": turn.content,
                "created_at": now,
                "files": list(turn.files) or None,
            }
            for turn in turns
        ]
        await connection.execute(insert(conversation_turns), rows)

    async def forget_team(self, team_id: str) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(conversation_turns).where(conversation_turns.c.team_id == team_id))
        return result.rowcount

    async def purge_older_than(self, age: timedelta) -> int:
        cutoff = self._clock() - age
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(conversation_turns).where(conversation_turns.c.created_at < cutoff)
            )
        return result.rowcount


async def read_thread_from_slack(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str,
    before_ts: str,
    bot_user_id: str | None,
    token_budget: int | None = None,
) -> list[Turn] | None:
    """The earlier messages of a thread the bot was not part of; None when Slack would not say.

    Read newest first, a page at a time (`latest` = the question, then the cursor to older pages), until the
    thread's start, the token budget, or Slack's limit on conversations.replies (once a minute for apps outside
    the Marketplace): what cannot be read is the oldest part, and the newest messages matter most."""
    messages: list[dict] = []
    cursor = None
    for _ in range(MAX_THREAD_PAGES):
        try:
            response = await client.conversations_replies(
                channel=channel, ts=thread_ts, latest=before_ts, inclusive=False, limit=THREAD_PAGE, cursor=cursor
            )
        except SlackApiError as error:
            if messages:  # a later page: keep the newer part already read
                log.info(
                    "read the newest %d messages of thread %s in %s; Slack said %s to more",
                    len(messages),
                    thread_ts,
                    channel,
                    slack_error(error),
                )
                break
            log.warning("could not read thread %s in %s: %s", thread_ts, channel, slack_error(error))
            return None
        except Exception as error:  # the network: the answer goes on with what was read, or without the thread
            log.warning("could not read thread %s in %s (%s)", thread_ts, channel, error.__class__.__name__)
            if messages:
                break
            return None
        seen = {message.get("ts") for message in messages}
        page: list[dict] = response.get("messages") or []
        messages = [message for message in page if message.get("ts") not in seen] + messages
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not response.get("has_more") or not cursor:
            break
        if token_budget is not None and sum(estimate_tokens(m.get("text") or "") for m in messages) > token_budget:
            break
    messages.sort(key=lambda message: float(message.get("ts") or 0))
    turns = []
    for message in messages:
        files = _file_records(message)
        if message.get("ts") == before_ts or not (message.get("text") or files):
            continue
        if bot_user_id and message.get("user") == bot_user_id:
            turns.append(Turn("assistant", message.get("text") or ""))
        else:
            author = message.get("user") or message.get("username") or "someone"
            turns.append(Turn("user", f"<@{author}>: {message.get('text') or ''}", files))
    return merge_consecutive(turns)


def _file_records(message: dict) -> tuple[dict, ...]:
    """A thread's files as references, with an estimate of their cost (known exactly once they are read)."""
    return tuple(
        {**file.as_record(), "estimate": estimate_file_tokens(file.mimetype, file.filetype, file.size)}
        for file in shared_files(message)
    )
