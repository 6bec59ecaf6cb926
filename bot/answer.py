"""The path of one question: claim and hold -> placeholder -> Claude's stream into Slack -> settlement.

Whatever happens on the way (Claude failing, Slack failing, the reply deleted, the database down, the
process stopping) the question gets exactly one visible outcome, and the credits held for it are either
charged for what was consumed or released. The question is recorded (bot/inflight.py) from the
transaction that claims it until its outcome is final, so that a process killed on the way leaves
behind what another process needs to finish it (bot/recovery.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from billing import Insufficient, Reservation, Settlement, TokenUsage
from bot import user_messages as say
from bot.claude_request import build_claude_request, input_allowance
from bot.claude_stream import ClaudeError, ClaudeStream, Failure
from bot.delivery import SlackReply, SlackScheduler
from bot.history import Turn, read_thread_from_slack, trim_to_budget
from bot.inflight import AnswerJournal
from bot.question import Question
from bot.services import Services
from storage import is_transient

log = logging.getLogger(__name__)

SHUTDOWN_FINISH_TIMEOUT = 5.0
CHECKPOINT_WAIT = 1.0
SETTLE_FIRST_WAIT = 0.5
SETTLE_MAX_WAIT = 15.0


class Outcome(enum.Enum):
    FINAL = "final"  # the question's outcome is shown and its credits accounted for: its record goes
    UNFINISHED = "unfinished"  # left for recovery (its record stays)
    NOT_RECORDED = "not recorded"  # a repeated delivery, or the claim itself failed: there is no record of ours


async def answer_question(question: Question, client: AsyncWebClient, services: Services, *, bot_user_id: str | None) -> None:
    journal = services.journal
    if not journal.start(question.reservation_id):
        log.info("event %s is being answered already; ignoring Slack's retry", question.event_id)
        return
    outcome = Outcome.UNFINISHED
    try:
        outcome = await _answer(question, client, services, bot_user_id)
    finally:
        if outcome is Outcome.FINAL:
            await journal.finished(question.reservation_id)
        else:
            journal.abandon(question.reservation_id)


@dataclass(frozen=True)
class Claimed:
    hold: Reservation | Insufficient | None  # None: nothing to hold (an empty question gets the help text)


async def claim(question: Question, services: Services) -> Claimed | None:
    """The only database work before anything is shown: one transaction that claims the event, holds the
    worst case of the answer's price and records the question. None when the event was claimed before."""
    with_history = question.may_continue_a_conversation
    needed = services.pricing.worst_case(
        input_allowance(services.settings, question.text, with_history=with_history), services.settings.claude_max_tokens
    )
    async with services.engine.begin() as connection:
        if not await services.events.claim(connection, question.event_id, question.team_id):
            return None
        hold = None
        if question.text:
            hold = await services.credits.reserve(
                question.team_id, question.user_id, needed, question.reservation_id, connection=connection
            )
        await services.journal.open(connection, question, hold.id if isinstance(hold, Reservation) else None)
    return Claimed(hold)


async def _answer(question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None) -> Outcome:
    scheduler = services.slack.for_team(question.team_id)
    try:
        claimed = await claim(question, services)
    except Exception:
        log.exception("could not start answering event %s", question.event_id)
        await tell(scheduler, client, question, say.NOT_STARTED)
        return Outcome.NOT_RECORDED
    if claimed is None:
        log.info("event %s was already answered; ignoring Slack's retry", question.event_id)
        return Outcome.NOT_RECORDED
    hold = claimed.hold
    if hold is None:
        await tell(scheduler, client, question, say.HELP.format(bot=f"<@{bot_user_id}>" if bot_user_id else "@bot"))
        return Outcome.FINAL
    if isinstance(hold, Insufficient):
        log.info("team %s has %d credits available, an answer needs %d", question.team_id, hold.available, hold.needed)
        await tell(scheduler, client, question, say.insufficient_credits(hold.available, services.pricing.describe()))
        return Outcome.FINAL
    return await answer_with(question, hold, client, scheduler, services, bot_user_id)


async def tell(scheduler: SlackScheduler, client: AsyncWebClient, question: Question, markdown: str) -> None:
    """A one-message outcome in the question's thread (waiting for the channel's turn, however long)."""
    try:
        await scheduler.post_markdown(client, channel=question.channel_id, thread_ts=question.reply_thread_ts, markdown=markdown)
    except Exception:
        log.exception("could not post the reply to event %s", question.event_id)


@dataclass
class Context:
    prior: list[Turn]
    imported: list[Turn]
    notice: str | None


async def conversation_so_far(question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None) -> Context:
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
    )
    if imported is None:
        return Context([], [], say.HISTORY_UNAVAILABLE)
    return Context(trim_to_budget(imported, services.settings.history_token_budget), imported, None)


class Checkpoints:
    """The reply's progress, written to its record before Slack shows it (see bot/inflight.py).

    One write at a time per reply, each carrying the newest state; a caller waits for it at most
    CHECKPOINT_WAIT, so a slow database delays an edit a little and a dead one not at all (the write is
    never cancelled half-way: it finishes in the background)."""

    def __init__(self, journal: AnswerJournal, record_id: str):
        self._journal = journal
        self._record_id = record_id
        self.usage: Callable[[], TokenUsage] = TokenUsage
        self._newest: tuple[list[str], str] | None = None
        self._writing: asyncio.Task | None = None
        self._failed = False

    async def shown(self, messages: list[str], text: str) -> None:
        self._newest = (list(messages), text)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.get_running_loop().create_task(self._write_newest(), name="checkpoint")
        await asyncio.wait({self._writing}, timeout=CHECKPOINT_WAIT)

    async def _write_newest(self) -> None:
        while self._newest is not None:
            (messages, text), self._newest = self._newest, None
            try:
                await self._journal.shown(self._record_id, messages, text, self.usage())
                self._failed = False
            except Exception as error:
                if not self._failed:
                    log.warning("could not checkpoint answer %s (%s)", self._record_id, error.__class__.__name__)
                self._failed = True


async def answer_with(
    question: Question, hold: Reservation, client: AsyncWebClient, scheduler: SlackScheduler, services: Services,
    bot_user_id: str | None,
) -> Outcome:
    checkpoints = Checkpoints(services.journal, question.reservation_id)
    reply = SlackReply(client, scheduler, channel=question.channel_id, thread_ts=question.reply_thread_ts, journal=checkpoints)
    # The first message waits for the channel's turn while the history is read and Claude starts writing:
    # when the turn comes it shows whatever Claude has written by then.
    posting = asyncio.get_running_loop().create_task(reply.start(say.THINKING), name="first message")
    try:
        return await _write_answer(question, hold, reply, posting, checkpoints, client, scheduler, services, bot_user_id)
    finally:
        if not posting.done():
            posting.cancel()


async def _write_answer(
    question: Question, hold: Reservation, reply: SlackReply, posting: asyncio.Task, checkpoints: Checkpoints,
    client: AsyncWebClient, scheduler: SlackScheduler, services: Services, bot_user_id: str | None,
) -> Outcome:
    context = await conversation_so_far(question, client, services, bot_user_id)
    stream = ClaudeStream(
        services.claude,
        build_claude_request(services.settings, context.prior, question.text),
        max_retries=services.settings.claude_max_retries,
        retry_max_wait=services.settings.claude_retry_max_wait,
    )
    checkpoints.usage = lambda: stream.usage
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

    if shutting_down and not posting.done():
        return Outcome.UNFINISHED  # nothing shown yet: the next process tells the asker (recovery.py)
    try:
        await posting
    except Exception as error:
        # Slack refused the first message (the bot is not in the channel, …): nothing could be shown, so
        # nothing is charged; what Claude consumed meanwhile is the operator's.
        log.warning("no message for event %s (%s); releasing its credits (request %s)",
                    question.event_id, error.__class__.__name__, stream.request_id)
        await services.credits.release(hold.id)
        return Outcome.FINAL

    deleted = reply.gone.is_set()
    learned = []
    if stream.text and failure_notice is None and not deleted:
        learned = [*context.imported, Turn("user", question.text), Turn("assistant", stream.text)]

    def tail(settlement: Settlement | None) -> str:
        notices = say.with_notices(
            context.notice,
            say.cut_at_length_limit(services.settings.claude_max_tokens) if stream.stop_reason == "max_tokens" else None,
            say.REFUSED if stream.stop_reason == "refusal" else None,
            failure_notice,
            say.low_balance(settlement.balance_after) if settlement and settlement.low_balance else None,
        )
        return notices if stream.text else notices.lstrip("\n")

    settlement = await settle(services, question, hold, stream, reply, deleted=deleted, learned=learned, tail=tail)

    if deleted:
        log.info("reply to event %s is gone; generation stopped (request %s)", question.event_id, stream.request_id)
        if settlement and settlement.low_balance:
            await tell(scheduler, client, question, say.low_balance(settlement.balance_after))  # shown once: not lost with the reply
        return Outcome.FINAL
    finishing = reply.finish(tail(settlement))
    if shutting_down:
        try:
            shown = await asyncio.wait_for(finishing, SHUTDOWN_FINISH_TIMEOUT)
        except TimeoutError:
            log.warning("stopping before the final text of event %s reached Slack; recovery will show it", question.event_id)
            return Outcome.UNFINISHED
    else:
        shown = await finishing
    if not shown:
        log.error("the final text of event %s could not be shown in Slack", question.event_id)
    return Outcome.FINAL


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


async def settle(
    services: Services, question: Question, hold: Reservation, stream: ClaudeStream, reply: SlackReply, *,
    deleted: bool, learned: list[Turn], tail: Callable[[Settlement | None], str],
) -> Settlement | None:
    """Charge what Claude consumed (or give the whole hold back when it produced nothing), remember the turn
    and mark the record settled, in one transaction; tried again until the database answers."""
    consumed = bool(stream.text) or stream.completed or (deleted and stream.usage.input_tokens > 0)
    # Flat pricing charges answers that showed text; token pricing charges whatever was consumed.
    charge = services.pricing.charge(stream.usage, produced_output=bool(stream.text)) if consumed else 0
    wait = SETTLE_FIRST_WAIT
    while True:
        try:
            async with services.engine.begin() as connection:
                settlement = None
                if consumed:
                    settlement = await services.credits.settle(hold.id, charge, connection=connection)
                else:
                    await services.credits.release(hold.id, connection=connection)
                await services.history.append(connection, question.conversation, learned)
                await services.journal.settled(connection, question.reservation_id, reply.messages, reply.current_text + tail(settlement))
            return settlement
        except Exception as error:
            if not is_transient(error):
                raise
            # The hold stays ours meanwhile: the sweeper leaves the holds of answers in progress alone.
            log.warning("settling reservation %s failed (%s); trying again in %.1fs (request %s)",
                        hold.id, error.__class__.__name__, wait, stream.request_id)
            await asyncio.sleep(wait)
            wait = min(wait * 2, SETTLE_MAX_WAIT)
