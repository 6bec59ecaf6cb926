"""Token rotation in OAuth mode end to end: a workspace installed with a rotating bot token that is about
to expire gets a new one (oauth.v2.access, grant_type=refresh_token) before the bot answers with it."""

from __future__ import annotations

import time

import pytest

from bot.installs import REFRESH_MINUTES_BEFORE_EXPIRY
from tests.harness import CLIENT_ID, OAUTH, TEAM

pytestmark = pytest.mark.billing

OLD_TOKEN = "xoxb-acme-rotating-1"


async def start(starter):
    return await starter(**{**OAUTH, "free_credits": 100, "ai_credits_per_message": 1, "low_balance_threshold": 0})


def refreshes(h) -> list:
    return [c for c in h.slack.calls_to("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"]


async def install_expiring_soon(h):
    assert REFRESH_MINUTES_BEFORE_EXPIRY * 60 > 60, "the token must fall inside the refresh margin"
    status, _ = await h.install(TEAM, bot_token=OLD_TOKEN, rotating=True, expires_in=60)
    assert status == 200
    bot = await h.services.installs.store.async_find_bot(enterprise_id=None, team_id=TEAM)
    assert bot.bot_token == OLD_TOKEN and bot.bot_refresh_token.startswith("xoxe-1-")
    assert bot.bot_token_expires_at <= time.time() + 60
    assert refreshes(h) == []
    return bot


async def test_a_mention_refreshes_an_expiring_token_and_answers_with_the_new_one(start_bot_on_each_database):
    h = await start(start_bot_on_each_database)
    installed = await install_expiring_soon(h)

    sent = await h.mention("hello")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "You said: hello"

    (refresh,) = refreshes(h)
    assert refresh.status == 200 and refresh.response["ok"]
    assert refresh.params["client_id"] == CLIENT_ID and refresh.params["refresh_token"] == installed.bot_refresh_token
    new_token, new_refresh = refresh.response["access_token"], refresh.response["refresh_token"]
    assert new_token != OLD_TOKEN and refresh.team_id == TEAM

    answer = [c for c in h.slack.calls_to("chat.postMessage") if c.params.get("channel") == "C0001"]
    assert answer and all(c.status == 200 and c.token == new_token and c.team_id == TEAM for c in answer)
    assert all(c.token == new_token for c in h.slack.calls_to("chat.update"))
    assert not [c for c in h.slack.calls if c.response.get("error") == "token_expired"]

    bot = await h.services.installs.store.async_find_bot(enterprise_id=None, team_id=TEAM)
    assert bot.bot_token == new_token and bot.bot_refresh_token == new_refresh
    assert bot.bot_token_expires_at > time.time() + REFRESH_MINUTES_BEFORE_EXPIRY * 60

    again = await h.mention("and again")
    await h.idle()
    assert h.reply_text("C0001", again.ts) == "You said: and again"
    assert len(refreshes(h)) == 1, "the new token is good for hours: no second refresh"


async def test_work_no_slack_request_started_refreshes_the_token_too(start_bot_on_sqlite):
    h = await start(start_bot_on_sqlite)
    await install_expiring_soon(h)

    client = await h.services.slack_client_for_team(TEAM)
    (refresh,) = refreshes(h)
    assert client.token == refresh.response["access_token"] != OLD_TOKEN
    assert (await client.auth_test())["team_id"] == TEAM
    bot = await h.services.installs.store.async_find_bot(enterprise_id=None, team_id=TEAM)
    assert bot.bot_token == client.token
    assert (await h.services.slack_client_for_team(TEAM)).token == client.token and len(refreshes(h)) == 1
