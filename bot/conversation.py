"""What Claude sees before the question: the conversation's earlier turns, from the bot's own history or, for a
thread the bot joins, read once from Slack."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from bot import user_messages as say
from bot.history import Turn, read_thread_from_slack, trim_to_budget
from bot.question import Question
from bot.services import Services

log = logging.getLogger(__name__)


@dataclass
class Context:
    prior: list[Turn]
    imported: list[Turn]
    notice: str | None


async def conversation_so_far(
    question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None
) -> Context:
    """The earlier turns: from the bot's own history, or read once from Slack for a thread it just joined."""
    if not question.may_continue_a_conversation:
        return Context([], [], None)
    try:
        prior = await services.history.load(question.conversation)
    except Exception:
        log.exception("could not read the history of event %s; answering without it", question.event_id)
        return Context([], [], say.HISTORY_NOT_LOADED)
    if prior is not None or not question.joins_existing_thread:
        return Context(prior or [], [], None)
    imported = await read_thread_from_slack(
        client,
        channel=question.channel_id,
        thread_ts=question.conversation.thread_ts,
        before_ts=question.ts,
        bot_user_id=bot_user_id,
        token_budget=services.settings.history_token_budget,
    )
    if imported is None:
        return Context([], [], say.HISTORY_UNAVAILABLE)
    return Context(trim_to_budget(imported, services.settings.history_token_budget), imported, None)
