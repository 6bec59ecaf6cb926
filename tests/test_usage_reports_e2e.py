"""/credits usage and /credits export through Slack: admins see this month by person and by channel, and get
every answer as a CSV file shared in their DM (files.uploadV2 against the fake's upload flow)."""

from __future__ import annotations

import csv
import io

import pytest

from tests.harness import TEAM

pytestmark = pytest.mark.billing

ADMIN, MEMBER, OTHER = "UADMIN", "U0001", "U0002"


async def start(start_bot):
    h = await start_bot(ai_credits_per_message=7, free_credits=0, low_balance_threshold=0)
    await h.services.credits.grant(TEAM, 1_000, kind="grant", source="test", external_id="initial")
    h.slack.add_user(TEAM, ADMIN, is_admin=True, name="admin")
    h.slack.add_user(TEAM, MEMBER, name="member")
    return h


async def ask_all(h, questions):
    for user, channel, text in questions:
        await h.mention(text, user=user, channel=channel)
        await h.idle()


async def credits_command(h, text: str, user: str = ADMIN) -> str:
    status, body = await h.command("/credits", text, user=user)
    assert status == 200, body
    return body["text"]


async def test_usage_this_month_by_person_and_by_channel_for_admins_only(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await ask_all(h, [(MEMBER, "C0001", "a"), (MEMBER, "C0002", "b"), (OTHER, "C0001", "c"), (MEMBER, "C0001", "d")])

    assert "Only workspace admins" in await credits_command(h, "usage", user=MEMBER)
    text = await credits_command(h, "usage")
    assert "28 credits over 4 answers" in text and "UTC" in text
    assert f"<@{MEMBER}> 21 (3), <@{OTHER}> 7 (1)" in text
    assert "<#C0001> 21 (3), <#C0002> 7 (1)" in text


async def test_export_shares_every_answer_as_csv_in_the_admins_dm(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await ask_all(h, [(MEMBER, "C0001", "first"), (OTHER, "C0002", "second")])

    assert "Only workspace admins" in await credits_command(h, "export", user=MEMBER)
    assert "didn't understand the dates" in await credits_command(h, "export 2026-13-01")
    assert "sending you the CSV" in await credits_command(h, "export")
    await h.idle()

    [shared] = [f for f in h.slack.files.values() if f.channel]
    assert shared.channel == f"D{ADMIN[1:]}", "shared in the admin's DM"
    assert shared.filename.endswith(".csv") and TEAM in shared.filename
    rows = list(csv.DictReader(io.StringIO(shared.content.decode())))
    assert [(row["user"], row["channel"], row["credits"]) for row in rows] == [
        (MEMBER, "C0001", "7"),
        (OTHER, "C0002", "7"),
    ]
    assert all(int(row["output_tokens"]) > 0 and row["model"] for row in rows)
    [comment] = [m for m in h.slack.channel_messages(shared.channel) if m.ts == shared.message_ts]
    assert "2 answers" in comment.text

    assert "sending you the CSV" in await credits_command(h, "export 2020-01-01 2020-02-01")
    await h.idle()
    empty = [f for f in h.slack.files.values() if f.channel and f is not shared]
    assert len(empty) == 1 and empty[0].content.decode().count("\n") == 1, (
        "only the header for a period without answers"
    )
