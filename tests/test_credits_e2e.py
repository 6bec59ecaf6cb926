"""Credits end to end: the real bot answers over signed HTTP, and the ledger must say exactly what was consumed.

Every test runs on a SQLite file and on PostgreSQL. Tests only talk to the bot over HTTP (mentions,
/credits) and read the results from the fakes and from the bot's billing API; expected charges are
computed here, from what the fake Claude reported and the per-million prices in billing/prices.json,
never with the bot's own pricing code.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from tests.fakes.anthropic import Script, split_deltas
from tests.harness import TEAM, BotHarness

pytestmark = pytest.mark.billing

MODEL = "claude-sonnet-4-6"  # the settings' default model
PRICES = {
    kind: Fraction(price)  # USD per million tokens, exact
    for kind, price in json.loads((Path(__file__).parents[1] / "billing" / "prices.json").read_text())["models"][
        MODEL
    ].items()
}
TOKEN_KINDS = {  # usage field -> price in prices.json
    "input_tokens": "input",
    "cache_creation_input_tokens": "cache_write",
    "cache_read_input_tokens": "cache_read",
    "output_tokens": "output",
}
MICRO_DOLLAR = 1_000_000  # credits per USD: one credit is a millionth of a dollar
LONG_SYSTEM_PROMPT = "You answer questions about the Acme deployment tooling, briefly and precisely. " * 8
INSUFFICIENT = "doesn't have enough credits"
LOW_BALANCE = "credits left"


# --- helpers ---------------------------------------------------------------------------------------


def expected_charge(usage: dict, *, credits_per_usd: int = MICRO_DOLLAR, markup_percent: int = 0) -> int:
    """Credits for `usage` (token counts as reported by Claude): exact USD, then marked up, rounded up once."""
    usd = sum(usage.get(field, 0) * PRICES[price] for field, price in TOKEN_KINDS.items()) / 1_000_000
    return math.ceil(usd * credits_per_usd * Fraction(100 + markup_percent, 100))


async def start_flat(start, *, price: int, granted: int, **overrides) -> BotHarness:
    h = await start(ai_credits_per_message=price, free_credits=0, **overrides)
    if granted:
        await h.services.credits.grant(TEAM, granted, kind="grant", source="test", external_id="initial")
    return h


async def start_token_priced(start, *, granted: int = 1_000_000, **overrides) -> BotHarness:
    h = await start(ai_credits_per_message=None, free_credits=0, credits_per_usd=MICRO_DOLLAR, **overrides)
    await h.services.credits.grant(TEAM, granted, kind="grant", source="test", external_id="initial")
    return h


async def usage_rows(h: BotHarness, event_id: str | None = None) -> list:
    rows = [row for row in await h.services.credits.history(TEAM, limit=1000) if row.kind == "usage"]
    if event_id is not None:
        rows = [row for row in rows if row.external_id == f"answer:{TEAM}:{event_id}"]
    return rows


async def charged_for(h: BotHarness, event_id: str) -> int:
    """What the answer to `event_id` cost; exactly one usage row must exist for it."""
    rows = await usage_rows(h, event_id)
    assert len(rows) == 1, f"expected one charge for {event_id}, found {[row.amount for row in rows]}"
    return -rows[0].amount


async def assert_books_consistent(h: BotHarness):
    """Nothing left held, and the accounts agree with the ledger and the reservations."""
    assert await h.services.credits.verify() == []
    balance = await h.services.credits.balance(TEAM)
    assert balance.reserved == 0
    return balance


async def wait_until(condition, *, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def blocks_text(blocks: list[dict]) -> str:
    """The words a block kit message shows: section and header texts, context and button labels."""

    def text_of(item: dict) -> str:
        text = item.get("text", "")
        return text.get("text", "") if isinstance(text, dict) else text

    parts = []
    for block in blocks:
        parts.append(text_of(block))
        parts.extend(text_of(element) for element in block.get("elements", []))
    return "\n".join(parts)


# --- 1. concurrency --------------------------------------------------------------------------------


async def test_fifty_concurrent_mentions_against_ten_answers_of_credit(start_bot_on_each_database):
    # No low-balance notice (threshold 0), so an answer's reply is exactly Claude's text.
    h = await start_flat(start_bot_on_each_database, price=3, granted=30, low_balance_threshold=0)
    h.claude.default = Script(delay=0.1, delta_chars=6)  # a few deltas each, so the answers overlap

    most_open_streams = 0

    async def watch_claude() -> None:
        nonlocal most_open_streams
        while True:
            most_open_streams = max(most_open_streams, h.claude.open_streams)
            await asyncio.sleep(0.005)

    watcher = asyncio.get_running_loop().create_task(watch_claude())
    try:
        sent = await asyncio.gather(*(h.mention(f"question {i}", channel=f"C1{i:02d}") for i in range(50)))
        assert all(s.status == 200 for s in sent)
        await h.idle(timeout=60)
    finally:
        watcher.cancel()

    assert len(h.claude.requests) == 10
    assert most_open_streams > 1, "the answers should have streamed at the same time"
    replies = {f"C1{i:02d}": h.reply_text(f"C1{i:02d}", s.ts) for i, s in enumerate(sent)}
    answered = [channel for channel, text in replies.items() if INSUFFICIENT not in text]
    refused = [text for text in replies.values() if INSUFFICIENT in text]
    assert len(answered) == 10 and len(refused) == 40
    for channel in answered:
        assert replies[channel] == f"You said: question {int(channel[2:])}"
    for text in refused:
        assert "*0* credits available" in text
        assert "3 credits per answer" in text
        assert "`/credits`" in text

    balance = await assert_books_consistent(h)
    assert (balance.balance, balance.available) == (0, 0)
    history = await h.services.credits.history(TEAM, limit=1000)
    assert all(row.balance_after >= 0 for row in history)
    assert sorted(-row.amount for row in history if row.kind == "usage") == [3] * 10


# --- 2. token pricing ------------------------------------------------------------------------------


@pytest.mark.parametrize("markup_percent", [0, 20])
async def test_token_pricing_charges_each_kind_of_token_reported(start_bot_on_each_database, markup_percent):
    h = await start_token_priced(
        start_bot_on_each_database, system_prompt=LONG_SYSTEM_PROMPT, credit_markup_percent=markup_percent
    )
    # The first answer is too short to cache (Anthropic's minimum is high): it pays plain input.
    first = await h.mention("what does deploy --dry-run do?")
    await h.idle()
    # Then caching starts: the first follow-up writes the cache, the second reads it and writes its own turn.
    h.claude.min_cache_tokens = 50
    follow_ups = []
    for question in ("and with --force?", "and both together?"):
        follow_ups.append(await h.mention(question, thread_ts=first.ts))
        await h.idle()

    answers = [first, *follow_ups]
    assert len(h.claude.requests) == len(answers)
    reported = [request.usage for request in h.claude.requests]
    for kind in TOKEN_KINDS:
        assert any(usage[kind] > 0 for usage in reported), f"no answer used {kind}: {reported}"
    assert reported[2]["cache_read_input_tokens"] > 0 and reported[2]["cache_creation_input_tokens"] > 0

    spent = 0
    for sent, usage in zip(answers, reported, strict=True):
        charged = await charged_for(h, sent.event_id)
        assert charged == expected_charge(usage, markup_percent=markup_percent), usage
        if markup_percent:
            assert charged > expected_charge(usage), "the markup must make the answer dearer"
        spent += charged
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000 - spent


# --- 3. flat pricing and Slack's retries -----------------------------------------------------------


async def test_flat_pricing_charges_the_price_per_answer_and_a_slack_retry_once(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=7, granted=100)
    h.claude.enqueue(Script(text="a deliberately slow answer", delta_chars=5, delay=0.1), Script(text="second"))

    sent = await h.mention("first question")
    await h.claude.wait_for_requests(1)
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    event = {
        "type": "app_mention",
        "user": "U0001",
        "text": "<@UBOT> first question",
        "ts": sent.ts,
        "channel": "C0001",
    }
    during = await h.send_event(event, event_id=sent.event_id, headers=retry)  # while the answer streams
    await h.idle()
    retry["X-Slack-Retry-Num"] = "2"
    after = await h.send_event(event, event_id=sent.event_id, headers=retry)  # after it was charged
    await h.idle()
    second = await h.mention("second question")
    await h.idle()

    assert during.status == after.status == 200
    assert len(h.claude.requests) == 2, "the retries must not reach Claude"
    assert await charged_for(h, sent.event_id) == 7
    assert await charged_for(h, second.event_id) == 7
    assert len(await usage_rows(h)) == 2
    balance = await assert_books_consistent(h)
    assert balance.balance == 100 - 2 * 7


# --- 4. Claude's faults --------------------------------------------------------------------------


async def test_overloaded_before_the_stream_charges_nothing(start_bot_on_each_database):
    h = await start_token_priced(start_bot_on_each_database, claude_max_retries=0)
    h.claude.enqueue(Script(http_error=529))
    sent = await h.mention("hello?")
    await h.idle()

    assert len(h.claude.requests) == 1
    assert "overloaded" in h.reply_text("C0001", sent.ts)
    assert await usage_rows(h) == []
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000


async def test_an_error_event_mid_stream_charges_the_input_and_the_output_so_far(start_bot_on_each_database):
    h = await start_token_priced(start_bot_on_each_database)
    h.claude.enqueue(
        Script(text="one two three four five six seven eight nine ten", delta_chars=4, error_after_deltas=4, delay=0.02)
    )
    sent = await h.mention("count to ten")
    await h.idle()

    request = h.claude.requests[0]
    assert 0 < request.deltas_sent < len(split_deltas(request.script.text, 4))
    assert request.usage["output_tokens"] > 0 and request.usage["input_tokens"] > 0
    assert "interrupted" in h.reply_text("C0001", sent.ts)
    charged = await charged_for(h, sent.event_id)
    assert charged == expected_charge(request.usage)
    assert charged > expected_charge({**request.usage, "output_tokens": 0}), "the output so far is paid too"
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000 - charged


async def test_a_dropped_connection_charges_the_input_and_the_delivered_text(start_bot_on_each_database):
    h = await start_token_priced(start_bot_on_each_database)
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    h.claude.enqueue(Script(text=text, delta_chars=6, drop_after_deltas=4, delay=0.05))
    sent = await h.mention("greek letters")
    await h.idle()
    await h.claude.wait_for_idle()

    request = h.claude.requests[0]
    delivered = request.text
    assert request.deltas_sent == 4 and delivered and text.startswith(delivered) and delivered != text
    reply = h.reply_text("C0001", sent.ts)
    assert reply.startswith(delivered.rstrip()) and "interrupted" in reply
    estimated_output = math.ceil(len(delivered) / 4)  # Claude never reported the output: estimated from the text
    charged = await charged_for(h, sent.event_id)
    assert charged == expected_charge({**request.usage, "output_tokens": estimated_output})
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000 - charged


async def test_max_tokens_charges_the_full_reported_usage(start_bot_on_each_database):
    h = await start_token_priced(start_bot_on_each_database, claude_max_tokens=20)
    h.claude.enqueue(Script(text="word " * 100, delta_chars=20))
    sent = await h.mention("write a lot")
    await h.idle()

    request = h.claude.requests[0]
    assert request.usage["output_tokens"] == 20, "the fake stops at max_tokens"
    assert "length limit" in h.reply_text("C0001", sent.ts)
    charged = await charged_for(h, sent.event_id)
    assert charged == expected_charge(request.usage)
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000 - charged


async def test_deleting_the_reply_mid_stream_stops_claude_and_charges_what_was_consumed_once(
    start_bot_on_each_database,
):
    h = await start_token_priced(start_bot_on_each_database)
    text = " ".join(f"word{i}" for i in range(200))
    h.claude.enqueue(Script(text=text, delta_chars=10, delay=0.05))  # about ten seconds if nobody stops it
    sent = await h.mention("a long answer please")

    def reply_updated() -> bool:
        thread = h.slack.thread("C0001", sent.ts)
        return bool(thread) and any(
            call.params.get("ts") == thread[0].ts and call.response.get("ok")
            for call in h.slack.calls_to("chat.update")
        )

    await wait_until(reply_updated, what="a chat.update of the reply")
    reply = h.slack.thread("C0001", sent.ts)[0]
    shown_before_delete = h.slack.visible_markdown(reply).rstrip("▌ \n")
    h.slack.delete_message("C0001", reply.ts)
    await h.idle()
    await h.claude.wait_for_idle()

    request = h.claude.requests[0]
    assert request.cancelled, "Claude's stream must be closed when the reply is deleted"
    assert request.deltas_sent < len(split_deltas(text, 10))
    assert len(h.claude.requests) == 1
    assert h.slack.thread("C0001", sent.ts) == [], "nothing is posted after the reply was deleted"
    charged = await charged_for(h, sent.event_id)
    # The bot pays for the text it read: at least what Slack showed, at most what Claude generated.
    least = expected_charge({**request.usage, "output_tokens": math.ceil(len(shown_before_delete) / 4)})
    most = expected_charge({**request.usage, "output_tokens": math.ceil(len(request.text) / 4)})
    assert least <= charged <= most
    assert charged > expected_charge({**request.usage, "output_tokens": 0})
    balance = await assert_books_consistent(h)
    assert balance.balance == 1_000_000 - charged


# --- 5. insufficient credits -----------------------------------------------------------------------


async def test_insufficient_credits_make_no_claude_request_and_say_so(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=3, granted=2)
    sent = await h.mention("can I ask?")
    await h.idle()

    assert h.claude.requests == []
    text = h.reply_text("C0001", sent.ts)
    assert INSUFFICIENT in text
    assert "*2* credits available" in text and "3 credits per answer" in text and "`/credits`" in text
    balance = await assert_books_consistent(h)
    assert balance.balance == 2
    assert await usage_rows(h) == []


# --- 6. low balance ------------------------------------------------------------------------------


async def test_the_answer_that_crosses_the_low_balance_threshold_says_so_once(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=1, granted=7, low_balance_threshold=5)
    replies = []
    for i in range(4):  # balance after each answer: 6, 5, 4, 3
        sent = await h.mention(f"question {i}", channel=f"C2{i:02d}")
        await h.idle()
        replies.append(h.reply_text(f"C2{i:02d}", sent.ts))

    assert [LOW_BALANCE in reply for reply in replies] == [False, False, True, False], replies
    assert "4 credits left" in replies[2]
    assert "`/credits`" in replies[2]
    balance = await assert_books_consistent(h)
    assert balance.balance == 3


def context_lines(message) -> list[str]:
    return [
        element["text"] for block in message.blocks or [] if block["type"] == "context" for element in block["elements"]
    ]


@pytest.mark.parametrize("mode", ["edit", "native"])
async def test_each_finished_answer_shows_its_cost_and_the_balance_after_it(start_bot_on_each_database, mode):
    h = await start_token_priced(start_bot_on_each_database, granted=1_000_000, slack_streaming=mode)
    spent = 0
    for i in range(2):
        sent = await h.mention(f"question {i}")
        await h.idle()
        charged = await charged_for(h, sent.event_id)
        spent += charged
        [reply] = h.replies("C0001", sent.ts)
        assert context_lines(reply) == [f"{charged:,} credits · balance {1_000_000 - spent:,}"]
        assert h.reply_text("C0001", sent.ts) == f"You said: question {i}", "the cost line is not part of the answer"
    assert charged > 1


async def test_show_cost_off_leaves_only_the_answer_and_its_feedback_buttons(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=1, granted=10, show_cost=False)
    sent = await h.mention("question")
    await h.idle()
    [reply] = h.replies("C0001", sent.ts)
    assert context_lines(reply) == []
    assert [block["type"] for block in reply.blocks][-1] == "context_actions"
    assert (await h.services.credits.balance(TEAM)).balance == 9


async def billing_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "billing",
        *args,
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


async def test_the_export_lists_every_answer_with_its_tokens_and_credits(start_bot_on_each_database):
    h = await start_token_priced(start_bot_on_each_database)
    asked = [("U0001", "C0001"), ("U0002", "C0002"), ("U0001", "C0003")]
    sent = []
    for i, (user, channel) in enumerate(asked):
        sent.append(await h.mention(f"question number {i}", user=user, channel=channel))
        await h.idle()
    code, out, err = await billing_cli(h.services.settings.database_url, "export", TEAM, "--since", "2020-01-01")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == (
        "time,user,channel,model,input_tokens,cache_creation_input_tokens,cache_read_input_tokens,output_tokens,credits"
    )
    assert len(rows) == 3
    for row, (user, channel), question, request in zip(rows, asked, sent, h.claude.requests, strict=True):
        assert (row["user"], row["channel"], row["model"]) == (user, channel, MODEL)
        assert {kind: int(row[kind]) for kind in TOKEN_KINDS} == {
            kind: request.usage.get(kind, 0) for kind in TOKEN_KINDS
        }
        assert int(row["credits"]) == await charged_for(h, question.event_id) == expected_charge(request.usage)
        assert row["time"].endswith("Z")
    assert [row["time"] for row in rows] == sorted(row["time"] for row in rows)

    code, out, _ = await billing_cli(
        h.services.settings.database_url, "export", TEAM, "--since", "2020-01-01", "--until", "2020-02-01"
    )
    assert (code, out.splitlines()[1:]) == (0, []), "a period without answers has only the header"


# --- 7. free credits -----------------------------------------------------------------------------


async def test_free_credits_are_granted_once_to_a_new_workspace(start_bot_on_each_database):
    h = await start_bot_on_each_database(ai_credits_per_message=1, free_credits=25)
    assert (await h.services.credits.balance(TEAM)).balance == 0, "no credits before the workspace is seen"

    first = await h.mention("first")
    await h.idle()
    second = await h.mention("second", channel="C0002")
    await h.idle()

    assert len(h.claude.requests) == 2
    history = await h.services.credits.history(TEAM, limit=100)
    trials = [row for row in history if row.kind == "trial"]
    assert [(row.amount, row.balance_after) for row in trials] == [(25, 25)]
    assert await charged_for(h, first.event_id) == 1
    assert await charged_for(h, second.event_id) == 1
    balance = await assert_books_consistent(h)
    assert balance.balance == 25 - 2


# --- 8. /credits ---------------------------------------------------------------------------------


async def test_credits_command_shows_balance_reserved_usage_top_users_and_price(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=2, granted=100)
    for i, user in enumerate(["U0001", "U0002", "U0001", "U0003", "U0001", "U0002"]):
        await h.mention(f"question {i}", user=user, channel=f"C3{i:02d}")
        await h.idle()
    # One more answer still waiting for Claude, so 2 credits are held while /credits is asked.
    h.claude.enqueue(Script(text="slow", first_delay=3.0))
    await h.mention("slow question", user="U0004", channel="C399")
    await h.claude.wait_for_requests(7)

    status, response = await h.command("/credits")

    assert status == 200 and isinstance(response, dict), response
    assert response["response_type"] == "ephemeral"
    shown = response.get("text", "") + "\n" + blocks_text(response.get("blocks") or [])
    assert "86" in shown, "available: 100 - 6 answers x 2 - 2 reserved"
    assert "88" in shown, "balance"
    assert "2 reserved" in shown
    assert "12 credits over 6 answers" in shown
    assert "<@U0001> 6" in shown and "<@U0002> 4" in shown and "<@U0003> 2" in shown
    assert shown.index("<@U0001>") < shown.index("<@U0002>") < shown.index("<@U0003>"), "top users first"
    assert "2 credits per answer" in shown
    await h.idle()
    balance = await assert_books_consistent(h)
    assert balance.balance == 86


async def test_the_low_balance_notice_survives_a_deleted_reply(start_bot_on_each_database):
    h = await start_flat(start_bot_on_each_database, price=1, granted=5, low_balance_threshold=5)
    h.claude.enqueue(Script(text=" ".join(f"word{i}" for i in range(200)), delta_chars=10, delay=0.05))
    sent = await h.mention("a long answer please")
    await wait_until(lambda: bool(h.slack.calls_to("chat.update")), what="a chat.update of the reply")
    (reply,) = h.slack.thread("C0001", sent.ts)
    h.slack.delete_message("C0001", reply.ts)
    await h.idle()
    (notice,) = h.slack.thread("C0001", sent.ts)
    assert "4 credits left" in h.slack.visible_markdown(notice)
    await assert_books_consistent(h)
