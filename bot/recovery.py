"""Finishing answers nobody is working on any more: their process died, or their task gave up.

For each such record (bot/inflight.py) the hold is settled for what the record says was consumed
when text was shown (never more than the hold, never free), or released when nothing was; then the reply is made
final in Slack: the text it showed stays, without the cursor, followed by a notice that the answer was interrupted
and how to ask again. A question that had no message yet gets that notice as its reply. An answer that was
already settled only lacked its final text, which the record holds: it is shown as it would have been.
"""

from __future__ import annotations

import contextlib
import logging

from slack_sdk.errors import SlackApiError

from billing import AnswerUsage
from bot import user_messages as say
from bot.delivery import MESSAGE_LIMIT, URGENT, split_markdown
from bot.delivery.edit_writer import MessageWriter
from bot.delivery.markdown import close_fence, open_fence
from bot.inflight import InFlight
from bot.services import Services
from bot.slack_errors import NETWORK_ERRORS, is_transient_slack_error

log = logging.getLogger(__name__)


async def recover(services: Services) -> int:
    """Start finishing every record of this process that no task works on, and every orphan of a dead
    process (once this one may judge); how many were taken on."""
    journal = services.journal
    records = []
    for record in await journal.abandoned_here() + await journal.orphans():
        if await journal.adopt(record):
            records.append(record)
    for record in records:
        services.tasks.spawn(finish_record(services, record), name=f"recover {record.id}")
    if records:
        log.warning("finishing %d interrupted answers", len(records))
    return len(records)


def final_text(record: InFlight) -> str:
    if record.settled:
        return record.text
    if not record.messages and record.outcome_text:
        return record.outcome_text  # the one message it was to get (help, no credits), never posted
    shown = close_fence(record.text, open_fence(record.text))
    notice = say.INTERRUPTED_BY_RESTART if record.messages else say.NOT_ANSWERED_BY_RESTART
    return f"{shown}\n\n{notice}" if shown else notice


async def finish_record(services: Services, record: InFlight) -> None:
    journal = services.journal
    try:
        await settle_record(services, record)
    except Exception:
        log.exception("could not settle interrupted answer %s; trying again later", record.id)
        journal.abandon(record.id)
        return
    try:
        await show_final(services, record, final_text(record))
    except Exception as error:
        transient = (
            is_transient_slack_error(error) if isinstance(error, SlackApiError) else isinstance(error, NETWORK_ERRORS)
        )
        if transient:
            log.warning(
                "could not show the end of interrupted answer %s (%s); trying again later",
                record.id,
                error.__class__.__name__,
            )
            journal.abandon(record.id)  # settled already: the next round only puts the text in place
            return
        log.exception("could not show the end of interrupted answer %s in Slack", record.id)
    await journal.finished(record.id)
    log.info("interrupted answer %s in %s finished (%d messages)", record.id, record.channel_id, len(record.messages))


async def settle_record(services: Services, record: InFlight) -> None:
    if record.reservation_id is None or record.settled:
        return
    # Like an answer Claude gave up on before writing anything: nothing shown, nothing charged (a crash is
    # not the asker's doing). Once text was shown it is charged, as far as the record knows what was consumed.
    async with services.engine.begin() as connection:
        if record.shown_anything:
            model = services.priced_model(record.model or services.settings.claude_model)
            charge = services.pricing_for(model).charge(record.usage, produced_output=True)
            usage = AnswerUsage.of(model, record.channel_id, record.usage)
            settlement = await services.credits.settle(
                record.reservation_id, charge, connection=connection, usage=usage
            )
            log.info("interrupted answer %s charged %d credits", record.id, settlement.charged)
        else:
            await services.credits.release(record.reservation_id, connection=connection)
        await services.journal.settled(connection, record.id, record.messages, final_text(record))


async def show_final(services: Services, record: InFlight, text: str) -> None:
    client = await services.slack_client_for_team(record.team_id)
    if client is None:
        log.info(
            "team %s has no installation any more; interrupted answer %s stays as it is", record.team_id, record.id
        )
        return
    scheduler = services.slack.for_team(record.team_id)
    pieces = split_markdown(text, MESSAGE_LIMIT)
    if not record.messages:
        for piece in pieces:
            await scheduler.post_markdown(
                client, channel=record.channel_id, thread_ts=record.thread_ts, markdown=piece, priority=URGENT
            )
        return
    if not await edit_to(client, scheduler, record.channel_id, record.messages[-1], pieces[0]):
        # A native stream the dead process left open cannot be edited: end it, then put the text in place.
        with contextlib.suppress(Exception):
            await scheduler.call(client, "chat.stopStream", channel=record.channel_id, ts=record.messages[-1])
        await edit_to(client, scheduler, record.channel_id, record.messages[-1], pieces[0])
    for piece in pieces[1:]:
        await scheduler.post_markdown(
            client, channel=record.channel_id, thread_ts=record.thread_ts, markdown=piece, priority=URGENT
        )


async def edit_to(client, scheduler, channel: str, ts: str, text: str) -> bool:
    """Replace a message's text (through the workspace's edit budget); False when it is still streaming."""
    writer = MessageWriter(client, scheduler.edits, channel=channel, ts=ts, source=lambda: "", on_gone=lambda: None)
    writer.finalize(text)
    await writer.done()
    return writer.error != "streaming_state_conflict"
