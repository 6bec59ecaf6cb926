"""A process killed mid-answer (SIGKILL: no cleanup at all) leaves nothing stuck: the next process finishes
every reply it left behind within SWEEP_INTERVAL_SECONDS and settles its hold for what was consumed."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import sqlalchemy as sa

from billing import Credits
from billing.tables import credit_ledger, credit_reservations
from bot import user_messages as say
from bot.delivery import CURSOR
from storage import create_engine
from tests.fakes.anthropic import FakeAnthropic, Script
from tests.fakes.slack import FakeSlack
from tests.fakes.stripe import FakeStripe
from tests.harness import BOT_TOKEN, BOT_USER, SIGNING_SECRET, TEAM, BotHarness
from tests.process import BotProcess

SWEEP = 6.0
LONG_ANSWER = " ".join(f"w{i:04d}" for i in range(400))


@pytest.fixture(params=["edit", "native"])
def streaming(request) -> str:
    return request.param


@pytest.fixture
async def world(database_url, tmp_path, streaming):
    slack, claude, stripe = FakeSlack(), FakeAnthropic(), FakeStripe()
    for fake in (slack, claude, stripe):
        await fake.start()
    slack.add_workspace(TEAM, BOT_TOKEN, bot_user_id=BOT_USER)
    environment = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "test-anthropic-key",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "DATABASE_URL": database_url,
        "SWEEP_INTERVAL_SECONDS": str(SWEEP),
        "SLACK_STREAMING": streaming,
        "SLACK_UPDATE_INTERVAL": "0.2",
        "FREE_CREDITS": "100000",
        "CLAUDE_MAX_TOKENS": "2000",
        "LOG_LEVEL": "INFO",
    }
    processes: list[BotProcess] = []

    def new_process(name: str, **settings: str) -> BotProcess:
        process = BotProcess({**environment, **settings}, workdir=tmp_path, name=name)
        processes.append(process)
        return process

    http = aiohttp.ClientSession()
    yield slack, claude, stripe, new_process, http, database_url
    await http.close()
    await asyncio.gather(*(asyncio.to_thread(process.stop) for process in processes))  # the fakes keep answering
    for fake in (slack, claude, stripe):
        await fake.stop()


def harness_for(world, process: BotProcess) -> BotHarness:
    slack, claude, stripe, _, http, _ = world
    return BotHarness(slack, claude, stripe, None, http, port=process.port)


async def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def ledger_of(database_url: str, reservation_id: str) -> tuple[str, int | None, list[int], list[str]]:
    """(reservation status, charged, usage amounts, ledger problems) for one answer."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            reservation = (
                await connection.execute(
                    sa.select(
                        credit_reservations.c.status, credit_reservations.c.charged, credit_reservations.c.amount
                    ).where(credit_reservations.c.id == reservation_id)
                )
            ).one()
            usage = (
                (
                    await connection.execute(
                        sa.select(credit_ledger.c.amount).where(
                            credit_ledger.c.external_id == reservation_id, credit_ledger.c.kind == "usage"
                        )
                    )
                )
                .scalars()
                .all()
            )
        problems = await Credits(engine).verify()
    finally:
        await engine.dispose()
    return reservation.status, reservation.charged, list(usage), problems, reservation.amount


async def test_killed_mid_stream_the_next_process_keeps_the_text_shown_and_charges_for_it(world):
    slack, claude, _, new_process, _, database_url = world
    first = new_process("first")
    await first.start()
    h = harness_for(world, first)
    claude.enqueue(Script(text=LONG_ANSWER, delta_chars=12, delay=0.05))
    sent = await h.mention("write a lot")

    def being_written(message) -> bool:
        return bool(message.streaming) or CURSOR in slack.visible_markdown(message)

    def shown_mid_stream():
        replies = slack.thread("C0001", sent.ts)
        text = slack.visible_markdown(replies[0]) if replies else ""
        return text if replies and being_written(replies[0]) and len(text) > 200 else None

    before_kill = await wait_for(shown_mid_stream, 20, "some text of the answer")
    await asyncio.sleep(0.3)
    first.kill()
    (message,) = slack.thread("C0001", sent.ts)
    assert being_written(message)
    shown = slack.visible_markdown(message).split(CURSOR)[0]
    assert shown.startswith(before_kill.split(CURSOR)[0])

    second = new_process("second")
    await second.start()
    restarted = time.monotonic()

    def finished():  # a stream left open is stopped, then edited to its final text: wait for that one
        message = slack.thread("C0001", sent.ts)[0]
        text = slack.visible_markdown(message)
        return text if not being_written(message) and text.endswith(say.INTERRUPTED_BY_RESTART) else None

    final = await wait_for(finished, SWEEP + 5, "the interrupted answer to be finished")
    assert time.monotonic() - restarted <= SWEEP, "finished within SWEEP_INTERVAL_SECONDS of the restart"
    assert final.startswith(shown), "the text shown stays"
    assert final.endswith(say.INTERRUPTED_BY_RESTART)
    assert len(slack.thread("C0001", sent.ts)) == 1, "no second reply"

    status, charged, usage, problems, held = await ledger_of(database_url, f"answer:{TEAM}:{sent.event_id}")
    assert status == "settled"
    assert usage == [-charged] and 0 < charged <= held, "charged for what was consumed, never more than the hold"
    assert problems == []


async def test_killed_while_thinking_the_next_process_says_so_and_charges_nothing(world, streaming):
    slack, claude, _, new_process, _, database_url = world
    first = new_process("first")
    await first.start()
    h = harness_for(world, first)
    claude.enqueue(Script(text="never shown", first_delay=60))
    sent = await h.mention("think hard")
    if streaming == "edit":
        await wait_for(lambda: slack.thread("C0001", sent.ts), 20, "the placeholder")
    else:  # no message before the first words: the thread's loading status says the bot is at it
        await wait_for(lambda: slack.thread_status("C0001", sent.ts) == say.LOADING_STATUS, 20, "the loading status")
    await claude.wait_for_requests(1)
    await asyncio.sleep(0.5)  # the placeholder's ts is recorded just after it is posted
    first.kill()
    shown = [slack.visible_markdown(m) for m in slack.thread("C0001", sent.ts)]
    assert shown == ([say.THINKING] if streaming == "edit" else [])

    second = new_process("second")
    await second.start()
    restarted = time.monotonic()
    final = await wait_for(
        lambda: (m := slack.thread("C0001", sent.ts)) and (t := slack.visible_markdown(m[0])) != say.THINKING and t,
        SWEEP + 5,
        "the question to get its reply",
    )
    assert time.monotonic() - restarted <= SWEEP
    assert final == (say.INTERRUPTED_BY_RESTART if streaming == "edit" else say.NOT_ANSWERED_BY_RESTART)
    assert len(slack.thread("C0001", sent.ts)) == 1 and slack.thread_status("C0001", sent.ts) == ""
    status, charged, usage, problems, _ = await ledger_of(database_url, f"answer:{TEAM}:{sent.event_id}")
    assert (status, charged, usage, problems) == ("released", 0, [], []), "nothing was shown: nothing is charged"


async def test_a_question_killed_before_its_placeholder_still_gets_a_reply(world):
    slack, _claude, _, new_process, _, database_url = world
    first = new_process("first")
    await first.start()
    h = harness_for(world, first)
    slack.post_per_channel_per_second, slack.post_burst = 0.1, 1  # the channel is busy: the placeholder must wait
    await h.mention("first question", channel="CBUSY")
    await wait_for(lambda: slack.channel_messages("CBUSY"), 10, "the first answer's message")
    sent = await h.mention("second question", channel="CBUSY")
    await asyncio.sleep(1.0)
    first.kill()
    assert slack.thread("CBUSY", sent.ts) == []
    slack.post_per_channel_per_second, slack.post_burst = 1.0, 3

    second = new_process("second")
    await second.start()
    final = await wait_for(lambda: slack.thread("CBUSY", sent.ts), SWEEP + 5, "a reply to the second question")
    assert slack.visible_markdown(final[0]) == say.NOT_ANSWERED_BY_RESTART
    status, _charged, usage, problems, _ = await ledger_of(database_url, f"answer:{TEAM}:{sent.event_id}")
    assert (status, usage, problems) == ("released", [], [])


async def test_a_reply_waiting_for_its_turn_keeps_its_true_reason_across_a_restart(world):
    """The workspace has no credits and the channel is busy: the process dies while the "no credits" reply
    waits for the channel. The next process posts that reply, not "ask again"."""
    slack, claude, _, new_process, _, _database_url = world
    first = new_process("first", FREE_CREDITS="0")
    await first.start()
    h = harness_for(world, first)
    slack.post_per_channel_per_second, slack.post_burst = 0.05, 1
    await h.mention("first", channel="CBUSY")
    await wait_for(lambda: slack.channel_messages("CBUSY"), 10, "the first reply")
    sent = await h.mention("second", channel="CBUSY")
    await asyncio.sleep(1.0)
    first.kill()
    assert slack.thread("CBUSY", sent.ts) == []
    slack.post_per_channel_per_second, slack.post_burst = 1.0, 3

    second = new_process("second", FREE_CREDITS="0")
    await second.start()
    (reply,) = await wait_for(lambda: slack.thread("CBUSY", sent.ts), SWEEP + 5, "the reply to the second question")
    assert "doesn't have enough credits" in slack.visible_markdown(reply)
    assert claude.requests == []
