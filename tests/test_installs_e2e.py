"""OAuth mode end to end: installing through /slack/install and /slack/oauth_redirect, many workspaces each
with its own token and balance, leaving and coming back, and org-wide installs on Enterprise Grid."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bot.tables import conversation_turns
from tests.harness import CLIENT_ID, OAUTH, TEAM

pytestmark = pytest.mark.billing

FREE = 100


async def start(starter, **overrides):
    return await starter(
        **{**OAUTH, "free_credits": FREE, "ai_credits_per_message": 1, "low_balance_threshold": 0, **overrides}
    )


async def stored_bot(h, team: str, enterprise_id: str | None = None):
    return await h.services.installs.store.async_find_bot(enterprise_id=enterprise_id, team_id=team)


async def stored_turns(h, team: str) -> int:
    async with h.services.engine.connect() as connection:
        query = sa.select(sa.func.count()).select_from(conversation_turns).where(conversation_turns.c.team_id == team)
        return (await connection.execute(query)).scalar_one()


async def trial_grants(h, team: str) -> int:
    return sum(1 for entry in await h.services.credits.history(team) if entry.kind == "trial")


def dms_to(h, channel: str) -> list:
    return [c for c in h.slack.calls_to("chat.postMessage") if c.params.get("channel") == channel]


async def test_install_end_to_end_welcomes_the_installer_and_answers_with_the_new_token(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    status, page, state = await h.start_install()
    assert status == 200 and "Add to Slack" in page and state
    assert f"client_id={CLIENT_ID}" in page and "scope=app_mentions:read," in page

    h.slack.add_oauth_code("the-code", TEAM, user_id="U0042", bot_token="xoxb-acme-1", team_name="Acme")
    status, page = await h.finish_install("the-code", state)
    assert status == 200 and "Thank you" in page

    (exchange,) = h.slack.calls_to("oauth.v2.access")
    assert exchange.params["client_id"] == CLIENT_ID and exchange.params["code"] == "the-code"
    bot = await stored_bot(h, TEAM)
    assert bot.bot_token == "xoxb-acme-1" and bot.bot_user_id == "UBOT" and bot.bot_id == "BBOT"

    (welcome,) = dms_to(h, "D0042")
    assert welcome.team_id == TEAM, "sent with the workspace's new token"
    text = welcome.params["blocks"][0]["text"]["text"]
    assert f"{FREE:,} free credits" in text and "/credits" in text and "<@UBOT>" in text
    assert (await h.services.credits.balance(TEAM)).balance == FREE

    sent = await h.mention("hello", user="U0042")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "You said: hello"
    assert {c.team_id for c in h.slack.calls_to("chat.update")} == {TEAM}
    assert (await h.services.credits.balance(TEAM)).balance == FREE - 1
    assert await h.services.credits.verify() == []


async def test_a_forged_or_reused_state_installs_nothing(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    h.slack.add_oauth_code("code-1", TEAM)

    status, _ = await h.finish_install("code-1", "forged-state")  # the attacker's own cookie matches it
    assert status == 401
    _, _, state = await h.start_install()
    status, _ = await h.finish_install("code-1", state, cookie_state="another-browser")
    assert status == 400, "the state must come back to the browser that started the install"
    status, _ = await h.finish_install("code-1", None)
    assert status == 400
    assert h.slack.calls_to("oauth.v2.access") == [] and await stored_bot(h, TEAM) is None

    assert (await h.finish_install("code-1", state))[0] == 200
    h.slack.add_oauth_code("code-2", "T0002")
    status, _ = await h.finish_install("code-2", state)
    assert status == 401, "a state works once"
    assert await stored_bot(h, "T0002") is None
    assert len(h.slack.calls_to("oauth.v2.access")) == 1

    _, _, racing_state = await h.start_install()
    h.slack.add_oauth_code("code-3", "T0003")
    h.slack.add_oauth_code("code-4", "T0004")
    results = await asyncio.gather(h.finish_install("code-3", racing_state), h.finish_install("code-4", racing_state))
    assert sorted(status for status, _ in results) == [200, 401], "two callbacks racing with one state: one wins"


async def test_two_workspaces_at_once_each_with_its_own_token_and_balance(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await h.install("T0001", user="U1", bot_token="xoxb-one")
    await h.install("T0002", user="U2", bot_token="xoxb-two", team_name="Globex")
    await h.services.credits.grant("T0002", 50, kind="grant", source="test", external_id="extra")

    one, two = await asyncio.gather(
        h.mention("first", team="T0001", channel="C1", user="U1"),
        h.mention("second", team="T0002", channel="C2", user="U2"),
    )
    await h.idle()
    assert h.reply_text("C1", one.ts) == "You said: first"
    assert h.reply_text("C2", two.ts) == "You said: second"
    assert {m.team_id for m in h.slack.channel_messages("C1")} == {"T0001"}
    assert {m.team_id for m in h.slack.channel_messages("C2")} == {"T0002"}
    for call in h.slack.calls_to("chat.postMessage") + h.slack.calls_to("chat.update"):
        assert call.team_id == {"C1": "T0001", "C2": "T0002", "D1": "T0001", "D2": "T0002"}[call.params["channel"]]
    assert (await h.services.credits.balance("T0001")).balance == FREE - 1
    assert (await h.services.credits.balance("T0002")).balance == FREE + 50 - 1
    assert (await h.services.credits.usage("T0001")).by_user == [("U1", 1)]
    assert (await h.services.credits.usage("T0002")).by_user == [("U2", 1)]


async def test_a_workspace_that_has_not_installed_the_app_is_not_answered(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await h.install("T0001")
    sent = await h.mention("anyone there?", team="T0404", channel="C404")
    await asyncio.sleep(0.3)
    await h.idle()
    assert sent.status == 200
    assert h.slack.channel_messages("C404") == [] and h.claude.requests == []
    assert (await h.services.credits.history("T0404")) == []


async def test_uninstall_then_reinstall_keeps_the_balance_forgets_the_history_and_grants_no_second_trial(
    start_bot_on_each_database,
):
    h = await start(start_bot_on_each_database)
    await h.install(TEAM, user="U0001")
    first = await h.mention("remember me", user="U0001")
    await h.idle()
    assert await stored_turns(h, TEAM) == 2
    assert (await h.services.credits.balance(TEAM)).balance == FREE - 1

    assert (await h.uninstall(TEAM)).status == 200
    await asyncio.sleep(0.3)
    assert await stored_bot(h, TEAM) is None
    assert await h.services.installs.store.async_find_installation(enterprise_id=None, team_id=TEAM) is None
    assert await stored_turns(h, TEAM) == 0
    assert (await h.services.credits.balance(TEAM)).balance == FREE - 1, "the ledger stays"

    ignored = await h.mention("still there?", user="U0001", thread_ts=first.ts)
    await asyncio.sleep(0.3)
    assert h.reply_text("C0001", ignored.ts) == ""

    assert (await h.install(TEAM, user="U0007", bot_token="xoxb-again"))[0] == 200
    assert await trial_grants(h, TEAM) == 1
    assert (await h.services.credits.balance(TEAM)).balance == FREE - 1
    (welcome,) = dms_to(h, "D0007")
    text = welcome.params["blocks"][0]["text"]["text"]
    assert "free credits" not in text and f"{FREE - 1:,} credits" in text

    again = await h.mention("hello again", user="U0007")
    await h.idle()
    assert h.reply_text("C0001", again.ts) == "You said: hello again"
    assert h.claude.requests[-1].body["messages"][0]["content"][0]["text"] == "hello again", "no earlier turns"
    assert await h.services.credits.verify() == []


async def test_revoked_bot_tokens_remove_the_install_like_an_uninstall(start_bot_on_sqlite):
    h = await start(start_bot_on_sqlite)
    await h.install(TEAM)
    await h.mention("hi")
    await h.idle()
    h.slack.remove_workspace(TEAM)
    await h.send_event({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOT"]}, "event_ts": "1"})
    await asyncio.sleep(0.3)
    assert await stored_bot(h, TEAM) is None and await stored_turns(h, TEAM) == 0


async def test_without_free_credits_the_welcome_promises_none(start_bot_on_sqlite):
    h = await start(start_bot_on_sqlite, free_credits=0)
    await h.install(TEAM)
    text = dms_to(h, "D0001")[0].params["blocks"][0]["text"]["text"]
    assert "free credits" not in text and "no credits yet" in text
    assert await h.services.credits.history(TEAM) == []


async def test_a_workspace_install_on_enterprise_grid_is_found_by_its_org(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    await h.install("T0001", enterprise_id="E0001", bot_token="xoxb-grid-one")
    sent = await h.mention("grid?", team="T0001", enterprise_id="E0001")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "You said: grid?"
    assert (await stored_bot(h, "T0001", "E0001")).bot_token == "xoxb-grid-one"
    assert (await h.services.credits.balance("T0001")).balance == FREE - 1
    client = await h.services.slack_client_for_team("T0001")
    assert client.token == "xoxb-grid-one"

    await h.uninstall("T0001", enterprise_id="E0001")
    await asyncio.sleep(0.3)
    assert await stored_bot(h, "T0001", "E0001") is None
    assert await h.services.slack_client_for_team("T0001") is None


async def test_an_org_wide_install_answers_every_workspace_and_credits_stay_per_workspace(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    status, _ = await h.install("E0001", enterprise_id="E0001", org_wide=True, bot_token="xoxb-org", user="U0001")
    assert status == 200
    bot = await h.services.installs.store.async_find_bot(
        enterprise_id="E0001", team_id=None, is_enterprise_install=True
    )
    assert bot.bot_token == "xoxb-org" and bot.is_enterprise_install
    assert await h.services.credits.history("E0001") == [], "no workspace of its own: no trial for the org"
    welcome = dms_to(h, "D0001")[0].params["blocks"][0]["text"]["text"]
    assert "Each workspace of your organization" in welcome

    grid = {"enterprise_id": "E0001", "org_wide": True}
    one, two = await asyncio.gather(
        h.mention("from one", team="T0001", channel="C1", **grid),
        h.mention("from two", team="T0002", channel="C2", **grid),
    )
    await h.idle()
    assert h.reply_text("C1", one.ts) == "You said: from one"
    assert h.reply_text("C2", two.ts) == "You said: from two"
    for team in ("T0001", "T0002"):
        assert (await h.services.credits.balance(team)).balance == FREE - 1, "each workspace its own trial and charge"
        assert await stored_turns(h, team) == 2
        assert (await h.services.slack_client_for_team(team)).token == "xoxb-org"

    await h.uninstall("E0001", **grid)
    await asyncio.sleep(0.3)
    assert (
        await h.services.installs.store.async_find_bot(enterprise_id="E0001", team_id=None, is_enterprise_install=True)
        is None
    )
    assert await stored_turns(h, "T0001") == 0 and await stored_turns(h, "T0002") == 0
    assert await h.services.slack_client_for_team("T0001") is None
