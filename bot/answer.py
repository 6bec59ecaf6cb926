"""The path of one question: claim and hold -> placeholder -> Claude's stream into Slack -> settlement.

Whatever happens on the way (Claude failing, Slack failing, the reply deleted, the database down, the
process stopping) the question gets exactly one visible outcome, and the credits held for it are either
charged for what was consumed or released. The question is recorded (bot/inflight.py) from the
transaction that claims it until its outcome is final, so that a process killed on the way leaves
behind what another process needs to finish it (bot/recovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk.web.async_client import AsyncWebClient

from billing import AnswerUsage, Insufficient, OverLimit, Reservation, Settlement
from bot import user_messages as say
from bot.answer_settings import AnswerChoice
from bot.attachments import ConversationFiles, read_conversation_files
from bot.claude_request import NO_QUESTION, build_claude_request, input_allowance
from bot.claude_stream import ClaudeError, ClaudeStream, Failure
from bot.conversation import conversation_so_far
from bot.delivery import Recipient, SlackReply, SlackScheduler
from bot.history import Turn
from bot.inflight import Checkpoints, NotOurs
from bot.logs import annotate
from bot.metrics import ANSWERS, CREDITS_CHARGED, count_tokens, first_text_after
from bot.question import Question
from bot.services import Services
from bot.stops import RunningAnswer
from bot.surfaces.answer_controls import cost_block, feedback_block, stop_block
from bot.surfaces.auto_reload import reload_if_low
from bot.surfaces.low_balance import tell_billing_admins
from config import Settings
from storage import is_transient

log = logging.getLogger(__name__)

STATUS_WAIT = 2.0  # a reply waits this long at most for the loading status it clears
SHUTDOWN_FINISH_TIMEOUT = 5.0
SHUTDOWN_SETTLE_TIMEOUT = 5.0
SETTLE_FIRST_WAIT = 0.5
SETTLE_MAX_WAIT = 15.0


class Outcome(enum.Enum):
    FINAL = "final"  # the question's outcome is shown and its credits accounted for: its record goes
    UNFINISHED = "unfinished"  # left for recovery (its record stays)
    NOT_RECORDED = "not recorded"  # a repeated delivery, or the claim itself failed: there is no record of ours


async def answer_question(
    question: Question, client: AsyncWebClient, services: Services, *, bot_user_id: str | None
) -> None:
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
    hold: Reservation | None  # None: the question gets `outcome` instead of an answer
    outcome: str | None = None  # the one message that answers it: the help text, or why there are no credits
    kind: str = "answered"  # what /metrics counts it as: answered (to be), help, over_limit, no_credits
    choice: AnswerChoice | None = None  # the model, prompt and web search it is answered with


async def claim(question: Question, services: Services, bot_user_id: str | None) -> Claimed | None:
    """The only database work before anything is shown: one transaction that claims the event, holds the
    worst case of the answer's price and records the question. None when the event was claimed before."""
    async with services.claims.begin() as connection:
        if not await services.events.claim(connection, question.event_id, question.team_id):
            return None
        choice = services.priced(
            await services.answer_settings.effective(question.team_id, question.channel_id, connection=connection)
        )
        pricing = services.pricing_for(choice.model)
        needed = pricing.worst_case(
            allowance(question, choice, services.settings),
            services.settings.claude_max_tokens,
            searches=services.settings.web_search_max_uses if choice.web_search else 0,
        )
        if not question.text and not question.files:
            claimed = Claimed(None, say.HELP.format(bot=f"<@{bot_user_id}>" if bot_user_id else "@bot"), "help")
        else:
            hold = await services.credits.reserve(  # new: the event claimed just now is this id's only user
                question.team_id,
                question.user_id,
                needed,
                question.reservation_id,
                connection=connection,
                new=True,
                channel_id=question.channel_id,
            )
            if isinstance(hold, OverLimit):
                log.info(
                    "team %s: event %s is over the %s limit of %s",
                    question.team_id,
                    question.event_id,
                    hold.limit.scope,
                    hold.limit.subject or "everyone",
                )
                claimed = Claimed(None, say.over_limit(hold), "over_limit")
            elif isinstance(hold, Insufficient):
                log.info(
                    "team %s has %d credits available, an answer needs %d", question.team_id, hold.available, needed
                )
                claimed = Claimed(None, say.insufficient_credits(hold.available, pricing.describe()), "no_credits")
            else:
                claimed = Claimed(hold, choice=choice)
        reservation = claimed.hold.id if claimed.hold else None
        annotate(reservation_id=reservation)
        await services.journal.open(
            connection,
            question,
            reservation,
            outcome_text=claimed.outcome,
            model=choice.model,
        )
    return claimed


def allowance(question: Question, choice: AnswerChoice, settings: Settings) -> int:
    """The most input tokens the question can take before its files are read (see input_allowance)."""
    return input_allowance(
        settings,
        question.text,
        with_history=question.may_continue_a_conversation,
        system_prompt=choice.system_prompt,
        web_search=choice.web_search,
    )


async def _answer(question: Question, client: AsyncWebClient, services: Services, bot_user_id: str | None) -> Outcome:
    scheduler = services.slack.for_team(question.team_id)
    # The thread's loading status changes nothing if shown twice (a repeated delivery) and clears with the reply:
    # it is shown before any database work, so a burst of questions sees it at once.
    status = None
    if services.settings.slack_streaming != "edit" and question.reply_thread_ts and question.user_id:
        status = asyncio.get_running_loop().create_task(show_loading_status(scheduler, client, question), name="status")
    try:
        claimed = await claim(question, services, bot_user_id)
    except Exception:
        log.exception("could not start answering event %s", question.event_id)
        ANSWERS.labels("not_started").inc()
        await tell(scheduler, client, question, say.NOT_STARTED, after=status)
        return Outcome.NOT_RECORDED
    if claimed is None:
        log.info("event %s was already answered; ignoring Slack's retry", question.event_id)
        return Outcome.NOT_RECORDED
    if claimed.hold is None:
        ANSWERS.labels(claimed.kind).inc()
        await tell(scheduler, client, question, claimed.outcome or say.UNEXPECTED, after=status)
        return Outcome.FINAL
    assert claimed.choice is not None
    return await answer_with(
        question, claimed.hold, claimed.choice, client, scheduler, services, bot_user_id, status=status
    )


async def tell(
    scheduler: SlackScheduler,
    client: AsyncWebClient,
    question: Question,
    markdown: str,
    *,
    after: asyncio.Task | None = None,
) -> None:
    """A one-message outcome in the question's thread (waiting for the channel's turn, however long), posted
    `after` the loading status, which it then clears."""
    if after is not None:
        await asyncio.wait({after}, timeout=STATUS_WAIT)
    try:
        await scheduler.post_markdown(
            client, channel=question.channel_id, thread_ts=question.reply_thread_ts, markdown=markdown
        )
    except Exception:
        log.exception("could not post the reply to event %s", question.event_id)


class Stopper:
    """Who stopped the answer, if anyone; stopping cancels the task that reads Claude's stream, which closes
    the connection and so stops the generation."""

    def __init__(self) -> None:
        self.by: str | None = None
        self.stopped = False
        self.lost = False  # another process took the answer over: this one leaves it alone
        self._reading: asyncio.Task | None = None

    def reading(self, task: asyncio.Task) -> None:
        self._reading = task
        if self.stopped:
            task.cancel()

    def stop(self, by: str | None = None) -> None:
        if not self.stopped:
            self.stopped, self.by = True, by
            if self._reading is not None:
                self._reading.cancel()

    def lose(self) -> None:
        self.lost = True
        self.stop()


async def answer_with(
    question: Question,
    hold: Reservation,
    choice: AnswerChoice,
    client: AsyncWebClient,
    scheduler: SlackScheduler,
    services: Services,
    bot_user_id: str | None,
    *,
    status: asyncio.Task | None = None,
) -> Outcome:
    settings = services.settings
    stopper = Stopper()
    checkpoints = Checkpoints(
        services.journal, question.reservation_id, on_stop_requested=stopper.stop, on_lost=stopper.lose
    )
    reply = SlackReply(
        client,
        scheduler,
        channel=question.channel_id,
        thread_ts=question.reply_thread_ts,
        mode=settings.slack_streaming,
        recipient=Recipient(question.team_id, question.user_id) if question.user_id else None,
        journal=FirstWordsTimer(checkpoints, question.ts),
        live_blocks=[stop_block(question.reservation_id)],
    )
    reply.on_stopped(stopper.stop)
    # The first sign shows while the history is read and Claude starts writing: the edit path's placeholder
    # (which, posted when the channel's turn comes, shows whatever Claude has written by then), or Slack's
    # loading status of the thread, the first message then opening with Claude's first words.
    first_sign = (
        status
        if status is not None and reply.mode != "edit"
        else asyncio.get_running_loop().create_task(
            show_first_sign(reply, scheduler, client, question), name="first sign"
        )
    )
    services.stops.add(
        RunningAnswer(
            question.reservation_id,
            question.team_id,
            question.channel_id,
            question.reply_thread_ts,
            question.user_id,
            stopper.stop,
        )
    )
    try:
        return await _write_answer(
            question, hold, choice, reply, first_sign, stopper, checkpoints, client, scheduler, services, bot_user_id
        )
    finally:
        services.stops.discard(question.reservation_id)
        if not first_sign.done():
            first_sign.cancel()


async def show_first_sign(
    reply: SlackReply, scheduler: SlackScheduler, client: AsyncWebClient, question: Question
) -> None:
    if reply.mode == "edit":
        await reply.start(say.THINKING)
    else:
        await show_loading_status(scheduler, client, question)


async def show_loading_status(scheduler: SlackScheduler, client: AsyncWebClient, question: Question) -> None:
    try:
        await scheduler.call(
            client,
            "assistant.threads.setStatus",
            channel_id=question.channel_id,
            thread_ts=question.reply_thread_ts,
            status=say.LOADING_STATUS,
            loading_messages=say.LOADING_MESSAGES,
        )
    except Exception as error:  # the answer's first words show soon anyway
        log.info("no loading status for event %s (%s)", question.event_id, error.__class__.__name__)


async def _write_answer(
    question: Question,
    hold: Reservation,
    choice: AnswerChoice,
    reply: SlackReply,
    first_sign: asyncio.Task,
    stopper: Stopper,
    checkpoints: Checkpoints,
    client: AsyncWebClient,
    scheduler: SlackScheduler,
    services: Services,
    bot_user_id: str | None,
) -> Outcome:
    context = await conversation_so_far(question, client, services, bot_user_id)
    files = await read_conversation_files(
        question.files, [record for turn in context.prior for record in turn.files], client, services.http
    )
    stream = ClaudeStream(
        services.claude,
        build_claude_request(services.settings, context.prior, question.text, files, choice),
        max_retries=services.settings.claude_max_retries,
        retry_max_wait=services.settings.claude_retry_max_wait,
    )
    checkpoints.usage = lambda: stream.usage
    session = AgentSession(scheduler, client, question)
    failure_notice, shutting_down = await files_refused(question, hold, choice, files, services), False
    try:
        if failure_notice is None:
            await stream_into(reply, stream, stopper, on_first_stream=session.start, slots=services.claude_slots)
    except ClaudeError as error:
        failure_notice = say.claude_failed(error.failure, error.request_id)
    except asyncio.CancelledError:
        shutting_down = True
        failure_notice = say.claude_failed(Failure.INTERRUPTED, stream.request_id)
    except Exception:
        log.exception("answering event %s failed (Claude request %s)", question.event_id, stream.request_id)
        failure_notice = say.UNEXPECTED

    if stopper.lost or (shutting_down and reply.mode == "edit" and not first_sign.done()):
        return Outcome.UNFINISHED  # another process finishes it (recovery.py), or tells the asker
    try:
        await reply.opened()
    except Exception as error:
        # Slack refused the first message (the bot is not in the channel, …): nothing could be shown, so
        # nothing is charged; what Claude consumed meanwhile is the operator's.
        log.warning(
            "no message for event %s (%s); releasing its credits (request %s)",
            question.event_id,
            error.__class__.__name__,
            stream.request_id,
        )
        await services.credits.release(hold.id)
        ANSWERS.labels("not_shown").inc()
        return Outcome.FINAL

    deleted = reply.gone.is_set()
    learned = []
    if stream.text and failure_notice is None and not deleted and not stopper.stopped:
        asked = Turn("user", question.text or NO_QUESTION, files.records())
        learned = [*context.imported, asked, Turn("assistant", stream.text)]

    def tail(settlement: Settlement | None) -> str:
        notices = say.with_notices(
            context.notice,
            say.files_not_read([(u.file.name, u.reason) for u in files.unreadable]) if files.unreadable else None,
            say.cut_at_length_limit(services.settings.claude_max_tokens)
            if stream.stop_reason == "max_tokens"
            else None,
            say.REFUSED if stream.stop_reason == "refusal" else None,
            say.sources(stream.sources) if stream.sources else None,
            say.stopped_by(stopper.by) if stopper.stopped else None,
            failure_notice,
            say.low_balance(settlement.balance_after) if settlement and settlement.low_balance else None,
        )
        return notices if stream.text else notices.lstrip("\n")

    await reply.quiesce()  # a continuation being posted: the record then names every message
    try:
        settlement = await settle(
            services,
            question,
            hold,
            choice.model,
            stream,
            reply,
            deleted=deleted or stopper.stopped,
            learned=learned,
            tail=tail,
            deadline=SHUTDOWN_SETTLE_TIMEOUT if shutting_down else None,
        )
    except (NotOurs, TimeoutError) as error:
        log.warning("leaving event %s to be finished by recovery (%s)", question.event_id, error.__class__.__name__)
        return Outcome.UNFINISHED
    count_tokens(stream.usage)
    if settlement is not None:
        CREDITS_CHARGED.inc(settlement.charged)

    if settlement and settlement.charged and services.reloads is not None:
        services.tasks.spawn(reload_if_low(services, question.team_id), name=f"auto-reload {question.team_id}")
    if settlement and settlement.low_balance:
        services.tasks.spawn(
            tell_billing_admins(services, client, question.team_id, settlement.balance_after),
            name=f"low balance {question.team_id}",
        )
    if deleted:
        log.info("reply to event %s is gone; generation stopped (request %s)", question.event_id, stream.request_id)
        if settlement and settlement.low_balance:
            await tell(
                scheduler, client, question, say.low_balance(settlement.balance_after)
            )  # shown once: not lost with the reply
        await session.end()
        ANSWERS.labels("deleted").inc()
        return Outcome.FINAL
    finishing = reply.finish(tail(settlement), final_blocks(question, settlement, services.settings.show_cost))
    if shutting_down:
        try:
            shown = await asyncio.wait_for(finishing, SHUTDOWN_FINISH_TIMEOUT)
        except TimeoutError:
            log.warning(
                "stopping before the final text of event %s reached Slack; recovery will show it", question.event_id
            )
            return Outcome.UNFINISHED
    else:
        shown = await finishing
    if not shown:
        log.error("the final text of event %s could not be shown in Slack", question.event_id)
    outcome = "not_shown" if not shown else "failed" if failure_notice else "stopped" if stopper.stopped else "answered"
    ANSWERS.labels(outcome).inc()
    log.info(
        "event %s %s: %d input and %d output tokens, %d credits",
        question.event_id,
        outcome.replace("_", " "),
        stream.usage.input_tokens,
        stream.usage.output_tokens,
        settlement.charged if settlement else 0,
    )
    await session.end()
    return Outcome.FINAL


class FirstWordsTimer:
    """The reply's journal, noting for /metrics when Claude's first words go to Slack."""

    def __init__(self, journal: Checkpoints, question_ts: str):
        self._journal, self._question_ts, self._timed = journal, question_ts, False

    async def shown(self, messages: list[str], text: str) -> None:
        if not self._timed and text and text != say.THINKING:
            self._timed = True
            first_text_after(self._question_ts)
        await self._journal.shown(messages, text)


async def files_refused(
    question: Question, hold: Reservation, choice: AnswerChoice, files: ConversationFiles, services: Services
) -> str | None:
    """Hold the credits the files may cost on top of the question (known only once they are read); what to say
    instead of asking Claude when they cannot be paid, or when nothing readable is left to ask about."""
    if not question.text and not files.question.readable:
        return say.NOTHING_TO_READ
    if not files.extra_tokens:
        return None
    settings, pricing = services.settings, services.pricing_for(choice.model)
    claimed = allowance(question, choice, settings)
    extra = pricing.worst_case(claimed + files.extra_tokens, settings.claude_max_tokens) - pricing.worst_case(
        claimed, settings.claude_max_tokens
    )
    try:
        held = await services.credits.extend(hold.id, extra)
    except Exception:
        log.exception("could not hold the credits of event %s's files", question.event_id)
        return say.UNEXPECTED
    if isinstance(held, Insufficient):
        log.info(
            "team %s: event %s's files need %d credits, %d available",
            question.team_id,
            question.event_id,
            held.needed,
            held.available,
        )
        return say.files_cost_too_much(held.available, held.needed, pricing.describe())
    if isinstance(held, OverLimit):
        return say.over_limit(held)
    return None


def final_blocks(question: Question, settlement: Settlement | None, show_cost: bool) -> list[dict]:
    """Under a finished answer: what it cost and the balance it left (SHOW_COST), then the feedback buttons."""
    blocks = []
    if show_cost and settlement is not None:
        blocks.append(
            cost_block(question.reservation_id, say.answer_cost(settlement.charged, settlement.balance_after))
        )
    return [*blocks, feedback_block(question.reservation_id)]


class AgentSession:
    """A native stream runs in an agent session of its thread, which is what shows Slack's Stop: set to
    `processing` when the first stream opens, and back to `active` when the answer is done."""

    def __init__(self, scheduler: SlackScheduler, client: AsyncWebClient, question: Question):
        self._scheduler, self._client, self._question = scheduler, client, question
        self._started = False

    async def _set(self, status: str) -> None:
        try:
            await self._scheduler.call(
                self._client,
                "agents.sessions.setStatus",
                channel_id=self._question.channel_id,
                thread_ts=self._question.reply_thread_ts,
                status=status,
                initiator_user_id=self._question.user_id or None,
            )
        except Exception as error:
            log.info(
                "agent session of event %s not set %s (%s)", self._question.event_id, status, error.__class__.__name__
            )

    def start(self) -> None:
        if not self._started:
            self._started = True
            asyncio.get_running_loop().create_task(self._set("processing"), name="agent session")

    async def end(self) -> None:
        if self._started:
            await self._set("active")


async def stream_into(
    reply: SlackReply,
    stream: ClaudeStream,
    stopper: Stopper,
    *,
    on_first_stream: Callable[[], None],
    slots: asyncio.Semaphore | None = None,
) -> None:
    """Pour Claude's text into the reply; stop Claude at once if the reply is deleted or someone stops it.
    `slots`: the process's streams (CLAUDE_MAX_STREAMS); a stopped or deleted answer leaves the queue at once."""

    async def pump() -> None:
        async with slots or contextlib.nullcontext():
            async for delta in stream.deltas():
                reply.append(delta)
                if reply.streamed:
                    on_first_stream()

    task = asyncio.get_running_loop().create_task(pump(), name="claude-stream")
    reply.on_gone(task.cancel)
    stopper.reading(task)
    try:
        await task
    except asyncio.CancelledError:
        if (reply.gone.is_set() or stopper.stopped) and not _current_task_cancelling():
            return  # leaving the stream closed the connection, so Claude stopped generating
        raise


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task and task.cancelling())


async def settle(
    services: Services,
    question: Question,
    hold: Reservation,
    model: str,
    stream: ClaudeStream,
    reply: SlackReply,
    *,
    deleted: bool,
    learned: list[Turn],
    tail: Callable[[Settlement | None], str],
    deadline: float | None = None,
) -> Settlement | None:
    """Charge what Claude consumed (or give the whole hold back when it produced nothing), remember the turn
    and mark the record settled, in one transaction; tried again until the database answers (or, when the
    process is stopping, until `deadline` seconds have passed: recovery settles it then)."""
    consumed = bool(stream.text) or stream.completed or (deleted and stream.usage.input_tokens > 0)
    # Flat pricing charges answers that showed text; token pricing charges whatever was consumed.
    charge = services.pricing_for(model).charge(stream.usage, produced_output=bool(stream.text)) if consumed else 0
    async with asyncio.timeout(deadline):
        return await _settle_until_done(services, question, hold, model, stream, reply, consumed, charge, learned, tail)


async def _settle_until_done(
    services, question, hold, model, stream, reply, consumed, charge, learned, tail
) -> Settlement | None:
    wait = SETTLE_FIRST_WAIT
    while True:
        try:
            async with services.engine.begin() as connection:
                settlement = None
                if consumed:
                    usage = AnswerUsage.of(model, question.channel_id, stream.usage)
                    settlement = await services.credits.settle(hold.id, charge, connection=connection, usage=usage)
                else:
                    await services.credits.release(hold.id, connection=connection)
                await services.history.append(connection, question.conversation, learned)
                await services.journal.settled(
                    connection, question.reservation_id, reply.messages, reply.current_text + tail(settlement)
                )
            return settlement
        except Exception as error:
            if not is_transient(error):
                raise
            # The hold stays ours meanwhile: the sweeper leaves the holds of answers in progress alone.
            log.warning(
                "settling reservation %s failed (%s); trying again in %.1fs (request %s)",
                hold.id,
                error.__class__.__name__,
                wait,
                stream.request_id,
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, SETTLE_MAX_WAIT)
