"""With SLACK_APP_TOKEN the bot also takes events over Socket Mode: it opens a websocket through the fake
Slack's apps.connections.open, acks each envelope, and answers exactly as it does over HTTP."""

from __future__ import annotations

import itertools
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.anthropic import Script
from tests.fakes.slack import FakeSlack
from tests.harness import BOT_TOKEN, BOT_USER, TEAM, new_ts

APP_TOKEN = "xapp-1-A0001-123-socketmodetoken"
_ids = itertools.count(1)


def mention_callback(text: str, *, channel: str = "C0001", user: str = "U0001", event_id: str | None = None) -> dict:
    """The event_callback body Slack puts in an events_api envelope (the same body harness.mention() POSTs)."""
    ts = new_ts()
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM,
    }
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"EvSock{next(_ids):06d}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "team_id": TEAM,
                "user_id": BOT_USER,
                "is_bot": True,
                "enterprise_id": None,
                "is_enterprise_install": False,
            }
        ],
    }


async def test_a_mention_over_socket_mode_is_acked_and_answered_in_its_thread_once(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_app_token=APP_TOKEN)
    connection = await h.slack.wait_for_socket()
    opened = h.slack.calls_to("apps.connections.open")
    assert [call.status for call in opened] == [200] and opened[0].team_id == TEAM
    assert opened[0].response["url"].endswith(f"/socket/{connection.id}")

    answer = "**Rotate** the key in settings, then run `rotate --now`."
    h.claude.enqueue(Script(text=answer, delta_chars=10, delay=0.02))
    body = mention_callback("how do I rotate a key?")
    envelope_id = await h.slack.socket_send(body)

    assert await h.slack.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}
    await h.claude.wait_for_requests(1)
    await h.idle()
    ts = body["event"]["ts"]
    replies = h.slack.thread("C0001", ts)
    assert len(replies) == 1
    assert h.slack.visible_markdown(replies[0]) == answer
    assert h.slack.calls_to("chat.postMessage")[0].params["thread_ts"] == ts
    assert h.claude.requests[0].body["messages"][-1]["content"][0]["text"] == "how do I rotate a key?"

    # Slack redelivers the same event (same event_id) in a new envelope: acked, never answered twice.
    again = await h.slack.socket_send(body, retry_attempt=1, retry_reason="timeout")
    await h.slack.wait_for_ack(again)
    same_again = await h.slack.socket_send(body)
    await h.slack.wait_for_ack(same_again)
    await h.idle()
    assert len(h.claude.requests) == 1
    assert len(h.slack.thread("C0001", ts)) == 1
    assert len(h.slack.calls_to("chat.postMessage")) == 1
    assert len(h.slack.socket_acks) == 3


async def test_the_bot_closes_its_socket_when_it_stops(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(slack_app_token=APP_TOKEN)
    connection = await h.slack.wait_for_socket()
    await h.bot.socket_mode.close_async()
    await connection.ws.close()  # returns at once when the client already closed
    assert connection.ws.closed


async def test_apps_connections_open_takes_only_an_app_level_token():
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, BOT_TOKEN)
        fake.add_app_token(APP_TOKEN, TEAM)
        client = AsyncWebClient(base_url=fake.api_url)
        opened = await client.apps_connections_open(app_token=APP_TOKEN)
        assert opened["url"].startswith(f"ws://127.0.0.1:{fake.port}/socket/")
        for token, error in [(BOT_TOKEN, "not_allowed_token_type"), ("xapp-unknown", "invalid_auth")]:
            try:
                await client.apps_connections_open(app_token=token)
            except SlackApiError as failure:
                assert failure.response["error"] == error
            else:
                raise AssertionError(f"{token} opened a connection")
        try:
            await AsyncWebClient(APP_TOKEN, base_url=fake.api_url).auth_test()
        except SlackApiError as failure:
            assert failure.response["error"] == "not_allowed_token_type"
        else:
            raise AssertionError("an app-level token called a bot method")
