"""The path of one question: credits -> placeholder -> Claude's stream into Slack -> settlement.

Whatever happens on the way — Claude failing, Slack failing, the reply deleted, the process
stopping — the reply ends in a final state (never "Thinking…") and the credits reserved for it
are either charged for what was consumed or released.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from billing import Insufficient, Reservation, Settlement
from bot import user_messages as say
from bot.claude_stream import ClaudeError, ClaudeStream, Failure
from bot.history import Turn, read_thread_from_slack, trim_to_budget
from bot.question import Question
from bot.services import Services
from bot.slack_writer import SlackReply, post_message

log = logging.getLogger(__name__)

CACHE_POINT = {"type": "ephemeral"}
SETTLE_ATTEMPTS = 3
# Reserve for more input than the usual four characters a token: code and many languages pack tighter.
RESERVE_CHARS_PER_TOKEN = 3
SHUTDOWN_FINISH_TIMEOUT = 5.0


def _cached(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": CACHE_POINT}]


def build_claude_request(services: Services, prior: list[Turn], question: str) -> dict:
    """Breakpoints on the system prompt, the end of the earlier conversation and the new question, so
    that a follow-up reads everything before it from Anthropic's cache instead of paying for it again."""
    messages = [{"role": turn.role, "content": turn.content} for turn in prior]
    if messages:
        messages[-1]["content"] = _cached(messages[-1]["content"])
    messages.append({"role": "user", "content": _cached(question)})
    return {
        "model": services.settings.claude_model,
        "max_tokens": services.settings.claude_max_tokens,
        "system": _cached(services.settings.system_prompt),
        "messages": messages,
    }


def reserved_input_tokens(request: dict) -> int:
    characters = len(request_text(request))
    return math.ceil(characters / RESERVE_CHARS_PER_TOKEN) + 16


def request_text(request: dict) -> str:
    parts = [block["text"] for block in request["system"]]
    for message in request["messages"]:
        content = message["content"]
        parts.extend([content] if isinstance(content, str) else [block["text"] for block in content])
    return "\n".join(parts)


@dataclass
class Context:
    prior: list[Turn]
    imported: list[Turn]
    notice: str | None


async def conversation_so_far(question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None) -> Context:
    """The earlier turns: from the bot's own history, or read once from Slack for a thread it just joined."""
    prior = await services.history.load(question.conversation)
    if prior is not None or not question.joins_existing_thread:
        return Context(prior or [], [], None)
    imported = await read_thread_from_slack(
        client,
        channel=question.channel_id,
        thread_ts=question.conversation.thread_ts,
        before_ts=question.ts,
        bot_user_id=bot_user_id,
    )
    if imported is None:
        return Context([], [], say.HISTORY_UNAVAILABLE)
    return Context(trim_to_budget(imported, services.settings.history_token_budget), imported, None)


@dataclass
class Prepared:
    context: Context
    request: dict
    hold: Reservation


async def prepare(question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None) -> Prepared | None:
    """Everything before the placeholder; None when the question is answered already (a retry, help, no credits)."""
    if not await services.events.claim(question.event_id, question.team_id):
        log.info("event %s was already answered; ignoring Slack's retry", question.event_id)
        return None
    if not question.text:
        help_text = say.HELP.format(bot=f"<@{bot_user_id}>" if bot_user_id else "@bot")
        await post_message(client, channel=question.channel_id, thread_ts=question.reply_thread_ts, markdown=help_text)
        return None
    context = await conversation_so_far(question, client, services, bot_user_id)
    request = build_claude_request(services, context.prior, question.text)
    needed = services.pricing.worst_case(reserved_input_tokens(request), services.settings.claude_max_tokens)
    hold = await services.credits.reserve(question.team_id, question.user_id, needed, question.reservation_id)
    if isinstance(hold, Insufficient):
        log.info("team %s has %d credits available, an answer needs %d", question.team_id, hold.available, needed)
        text = say.insufficient_credits(hold.available, services.pricing.describe())
        await post_message(client, channel=question.channel_id, thread_ts=question.reply_thread_ts, markdown=text)
        return None
    return Prepared(context, request, hold)


async def answer_question(question: Question, client: AsyncWebClient, services: Services, *, bot_user_id: str | None) -> None:
    try:
        prepared = await prepare(question, client, services, bot_user_id)
    except Exception:
        # The database or Slack failed before any credit was held: say so rather than stay silent.
        log.exception("could not start answering event %s", question.event_id)
        try:
            await post_message(client, channel=question.channel_id, thread_ts=question.reply_thread_ts, markdown=say.NOT_STARTED)
        except Exception:
            log.exception("could not tell the user about event %s either", question.event_id)
        return
    if prepared is None:
        return
    context, request, hold = prepared.context, prepared.request, prepared.hold

    reply = SlackReply(
        client,
        services.edit_schedulers.for_team(question.team_id),
        channel=question.channel_id,
        thread_ts=question.reply_thread_ts,
    )
    try:
        await reply.start(say.THINKING)
    except (Exception, asyncio.CancelledError) as error:
        log.warning("no placeholder for event %s (%s); releasing its credits", question.event_id, error.__class__.__name__)
        await services.credits.release(hold.id)
        if isinstance(error, asyncio.CancelledError):
            raise
        return

    stream = ClaudeStream(
        services.claude,
        request,
        max_retries=services.settings.claude_max_retries,
        retry_max_wait=services.settings.claude_retry_max_wait,
    )
    failure_notice, shutting_down = None, False
    try:
        await stream_into(reply, stream)
    except ClaudeError as error:
        failure_notice = say.claude_failed(error.failure, error.request_id)
    except asyncio.CancelledError:
        shutting_down = True
        failure_notice = say.claude_failed(Failure.INTERRUPTED, stream.request_id)
    except Exception:
        log.exception("answering event %s failed (Claude request %s)", question.event_id, stream.request_id)
        failure_notice = say.UNEXPECTED

    settlement = await settle(services, hold, stream, reply_deleted=reply.gone.is_set())
    if reply.gone.is_set():
        log.info("reply to event %s is gone; generation stopped (request %s)", question.event_id, stream.request_id)
        if settlement and settlement.low_balance:
            # The notice is shown once; it must not vanish with the deleted reply.
            try:
                await post_message(client, channel=question.channel_id, thread_ts=question.reply_thread_ts,
                                   markdown=say.low_balance(settlement.balance_after))
            except Exception:
                log.exception("could not post the low-balance notice of event %s", question.event_id)
        return
    notices = say.with_notices(
        context.notice,
        say.cut_at_length_limit(services.settings.claude_max_tokens) if stream.stop_reason == "max_tokens" else None,
        say.REFUSED if stream.stop_reason == "refusal" else None,
        failure_notice,
        say.low_balance(settlement.balance_after) if settlement and settlement.low_balance else None,
    )
    finishing = reply.finish(notices.lstrip("\n") if not stream.text else notices)
    if shutting_down:
        try:
            await asyncio.wait_for(finishing, SHUTDOWN_FINISH_TIMEOUT)
        except TimeoutError:
            log.warning("stopping before the final text of event %s reached Slack", question.event_id)
        raise asyncio.CancelledError
    shown = await finishing
    if not shown:
        log.error("the final text of event %s could not be shown in Slack", question.event_id)
    if stream.text and failure_notice is None:
        await services.history.append(
            question.conversation, [*context.imported, Turn("user", question.text), Turn("assistant", stream.text)]
        )


async def stream_into(reply: SlackReply, stream: ClaudeStream) -> None:
    """Pour Claude's text into the reply; stop Claude at once if the reply is deleted."""

    async def pump() -> None:
        async for delta in stream.deltas():
            reply.append(delta)

    task = asyncio.get_running_loop().create_task(pump(), name="claude-stream")
    reply.on_gone(task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if reply.gone.is_set() and not _current_task_cancelling():
            return  # leaving the stream closed the connection, so Claude stopped generating
        raise


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


async def settle(services: Services, hold: Reservation, stream: ClaudeStream, *, reply_deleted: bool) -> Settlement | None:
    """Charge what Claude consumed, or give the whole reservation back when it produced nothing."""
    consumed = bool(stream.text) or stream.completed or (reply_deleted and stream.usage.input_tokens > 0)
    # Flat pricing charges answers that showed text; token pricing charges whatever was consumed.
    charge = services.pricing.charge(stream.usage, produced_output=bool(stream.text)) if consumed else 0
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            if not consumed:
                await services.credits.release(hold.id)
                return None
            return await services.credits.settle(hold.id, charge)
        except Exception:
            # Left held, the reservation would be released by the sweeper: the answer would be free.
            log.exception("settling reservation %s failed (attempt %d)", hold.id, attempt + 1)
            await asyncio.sleep(0.5 * 2**attempt)
    log.error("reservation %s stays held; the sweeper will release it (request %s)", hold.id, stream.request_id)
    return None
