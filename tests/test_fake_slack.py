"""The fake answers the real AsyncWebClient with Slack's shapes, rate limits and size limits."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import MANIFEST_SCOPES, FakeSlack

TOKEN = "xoxb-T1-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def make(clock):
    started = []

    async def make(**limits) -> tuple[FakeSlack, AsyncWebClient]:
        fake = FakeSlack(clock=clock, **limits)
        await fake.start()
        started.append(fake)
        fake.add_workspace("T1", TOKEN, bot_user_id="UBOT", bot_id="BBOT")
        return fake, AsyncWebClient(TOKEN, base_url=fake.api_url)

    yield make
    for fake in started:
        await fake.stop()


def markdown(text: str) -> dict:
    return {"text": "plain fallback", "blocks": [{"type": "markdown", "text": text}]}


async def failure(call) -> SlackApiError:
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value


async def test_post_then_update_shows_the_latest_markdown(make):
    fake, client = await make()
    posted = await client.chat_postMessage(channel="C1", thread_ts="1700000001.000100", **markdown("Thinking…"))
    assert re.fullmatch(r"\d{10}\.\d{6}", posted["ts"])
    assert posted["message"]["user"] == "UBOT" and posted["message"]["bot_id"] == "BBOT"
    assert posted["message"]["thread_ts"] == "1700000001.000100"
    second = await client.chat_postMessage(channel="C1", thread_ts="1700000001.000100", text="plain")
    assert float(second["ts"]) > float(posted["ts"])

    updated = await client.chat_update(channel="C1", ts=posted["ts"], **markdown("**Done** here"))
    assert updated["ts"] == posted["ts"] and updated["message"]["blocks"][0]["text"] == "**Done** here"
    (reply, plain) = fake.thread("C1", "1700000001.000100")
    assert fake.visible_markdown(reply) == "**Done** here"
    assert fake.visible_markdown(plain) == "plain"
    assert [(text, blocks[0]["text"]) for _, text, blocks in reply.edits] == [("plain fallback", "**Done** here")]
    await client.chat_update(channel="C1", ts=posted["ts"], text="new fallback")
    assert fake.visible_markdown(reply) == "**Done** here", "like Slack, an update without blocks keeps them"
    call = fake.calls_to("chat.update")[0]
    assert call.team_id == "T1" and call.params["blocks"][0]["type"] == "markdown"


async def test_form_encoded_calls_with_a_token_param_and_blocks_as_a_json_string(make):
    fake, _ = await make()
    anonymous = AsyncWebClient(base_url=fake.api_url)
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}])
    response = await anonymous.api_call("chat.postMessage", data={"token": TOKEN, "channel": "C2", "blocks": blocks})
    assert response["ok"] and response.headers["content-type"].startswith("application/json")
    (message,) = fake.channel_messages("C2")
    assert message.blocks[0]["type"] == "section" and fake.visible_markdown(message) == "*hi*"


async def test_tokens_methods_and_uninstalls(make):
    fake, client = await make()
    assert (await client.auth_test())["user_id"] == "UBOT"
    assert (await failure(AsyncWebClient(base_url=fake.api_url).auth_test())).response["error"] == "not_authed"
    assert (await failure(AsyncWebClient("xoxb-nope", base_url=fake.api_url).auth_test())).response[
        "error"
    ] == "invalid_auth"
    assert (await failure(client.api_call("chat.frobnicate"))).response["error"] == "unknown_method"
    fake.remove_workspace("T1")
    assert (await failure(client.auth_test())).response["error"] == "invalid_auth"


async def test_update_limit_answers_429_until_the_oldest_edit_leaves_the_window(make, clock):
    fake, client = await make(update_limit_per_minute=3)
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    for n in range(3):
        await client.chat_update(channel="C1", ts=ts, text=f"edit {n}")
        clock.now += 10
    limited = await failure(client.chat_update(channel="C1", ts=ts, text="too many"))
    assert limited.response.status_code == 429 and limited.response["error"] == "ratelimited"
    assert limited.response.headers["Retry-After"] == "30"
    clock.now += 29.5  # refused calls don't use up the budget, so only the first edit has to age out
    assert (await failure(client.chat_update(channel="C1", ts=ts, text="no"))).response.headers["Retry-After"] == "1"
    clock.now += 0.5
    await client.chat_update(channel="C1", ts=ts, text="made it")
    assert [c.status for c in fake.calls_to("chat.update")] == [200, 200, 200, 429, 429, 200]


async def test_an_update_after_the_user_deleted_the_message_is_not_found(make):
    fake, client = await make()
    ts = (await client.chat_postMessage(channel="C1", thread_ts="1.000001", text="hello"))["ts"]
    fake.delete_message("C1", ts)
    assert (await failure(client.chat_update(channel="C1", ts=ts, text="more"))).response[
        "error"
    ] == "message_not_found"
    assert (await failure(client.chat_update(channel="C1", ts="1.000002", text="x"))).response[
        "error"
    ] == "message_not_found"
    assert fake.thread("C1", "1.000001") == []


async def test_size_limits(make):
    fake, client = await make(post_burst=10)  # rejected posts still spend the channel's rate budget
    too_long = await failure(client.chat_postMessage(channel="C1", **markdown("a" * 12_001)))
    assert too_long.response["error"] == "msg_too_long"
    await client.chat_postMessage(channel="C1", **markdown("a" * 12_000))
    split = {
        "text": "x",
        "blocks": [{"type": "markdown", "text": "a" * 6_001}, {"type": "markdown", "text": "b" * 6_000}],
    }
    assert (await failure(client.chat_postMessage(channel="C1", **split))).response["error"] == "msg_too_long"
    ts = (await client.chat_postMessage(channel="C1", text="a" * 4_000))["ts"]
    assert (await failure(client.chat_update(channel="C1", ts=ts, text="a" * 4_001))).response[
        "error"
    ] == "msg_too_long"
    many = [{"type": "markdown", "text": "x"}] * 51
    assert (await failure(client.chat_update(channel="C1", ts=ts, text="x", blocks=many))).response[
        "error"
    ] == "invalid_blocks"
    empty = [{"type": "markdown", "text": ""}]
    assert (await failure(client.chat_update(channel="C1", ts=ts, text="x", blocks=empty))).response[
        "error"
    ] == "invalid_blocks"
    both = await failure(client.chat_postMessage(channel="C1", text="x", markdown_text="**x**"))
    assert both.response["error"] == "invalid_arguments"
    assert [len(m.text) for m in fake.channel_messages("C1")] == [14, 4000], "rejected calls change nothing"


async def test_an_injected_ratelimit_answers_429_once(make):
    fake, client = await make()
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    fake.inject("chat.update", "ratelimited", retry_after=7)
    limited = await failure(client.chat_update(channel="C1", ts=ts, text="y"))
    assert limited.response.status_code == 429 and limited.response.headers["Retry-After"] == "7"
    await client.chat_update(channel="C1", ts=ts, text="y")
    fake.inject("chat.update", "cant_update_message")
    refused = await failure(client.chat_update(channel="C1", ts=ts, text="z"))
    assert refused.response.status_code == 200 and refused.response["error"] == "cant_update_message"


async def test_conversations_replies_is_tier_1_and_includes_the_bots_replies(make, clock):
    fake, client = await make()
    parent = "1700000001.000100"
    fake.add_history(
        "C1",
        parent,
        [
            {"type": "message", "user": "U1", "text": "question", "ts": parent},
            {"type": "message", "user": "U2", "text": "me too", "ts": "1700000002.000100", "thread_ts": parent},
        ],
    )
    await client.chat_postMessage(channel="C1", thread_ts=parent, text="answer")
    replies = await client.conversations_replies(channel="C1", ts=parent)
    assert [m["text"] for m in replies["messages"]] == ["question", "me too", "answer"]
    assert replies["messages"][2]["user"] == "UBOT" and replies["has_more"] is False
    clock.now += 45
    limited = await failure(client.conversations_replies(channel="C1", ts=parent))
    assert limited.response.status_code == 429 and limited.response.headers["Retry-After"] == "15"
    clock.now += 15
    assert (await client.conversations_replies(channel="C1", ts=parent))["ok"]


async def test_post_message_allows_a_burst_then_one_per_second_per_channel(make, clock):
    fake, client = await make(post_burst=3, post_per_channel_per_second=1.0)
    for n in range(3):
        await client.chat_postMessage(channel="C1", text=f"post {n}")
    limited = await failure(client.chat_postMessage(channel="C1", text="one too many"))
    assert limited.response.status_code == 429 and limited.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C2", text="another channel has its own bucket")
    clock.now += 1.0
    await client.chat_postMessage(channel="C1", text="refilled")
    assert len(fake.channel_messages("C1")) == 4


async def test_oauth_code_exchange_installs_the_workspace_once(make):
    fake, _ = await make()
    fake.add_oauth_code("code-1", "T9", bot_token="xoxb-T9", bot_user_id="UB9", bot_id="BB9", team_name="Nine")
    installed = AsyncWebClient("xoxb-T9", base_url=fake.api_url)
    assert (await failure(installed.auth_test())).response["error"] == "invalid_auth", "no token before the exchange"
    anonymous = AsyncWebClient(base_url=fake.api_url)
    payload = await anonymous.oauth_v2_access(client_id="cid", client_secret="secret", code="code-1")
    assert payload["access_token"] == "xoxb-T9" and payload["token_type"] == "bot"
    assert payload["team"] == {"id": "T9", "name": "Nine"} and payload["enterprise"] is None
    assert payload["authed_user"]["id"] == "U0001" and payload["bot_user_id"] == "UB9"
    assert (await installed.auth_test())["bot_id"] == "BB9"
    again = await failure(anonymous.oauth_v2_access(client_id="cid", client_secret="secret", code="code-1"))
    assert again.response["error"] == "invalid_code"
    assert fake.calls_to("oauth.v2.access")[0].team_id == "T9"


async def test_users_info_views_publish_dms_and_ephemerals(make):
    fake, client = await make()
    fake.add_user("T1", "U1", is_admin=True, name="ada")
    user = (await client.users_info(user="U1"))["user"]
    assert user["is_admin"] and not user["is_owner"] and user["team_id"] == "T1" and user["name"] == "ada"
    assert (await failure(client.users_info(user="U404"))).response["error"] == "user_not_found"
    view = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Credits: 5"}}]}
    assert (await client.views_publish(user_id="U1", view=view))["view"]["type"] == "home"
    assert fake.home_views[("T1", "U1")]["blocks"] == view["blocks"]
    opened = await client.conversations_open(users="U0001")
    assert opened["channel"]["id"] == "D0001" == (await client.conversations_open(users="U0001"))["channel"]["id"]
    ephemeral = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert fake.ephemeral[0].user == "U1" and fake.ephemeral[0].message_ts == ephemeral["message_ts"]


async def test_a_rotating_install_refreshes_with_a_refresh_token_and_the_old_token_expires(make):
    fake, _ = await make()
    fake.add_oauth_code("code-r", "T9", bot_token="xoxb-T9-old", team_name="Nine", rotating=True, expires_in=60)
    anonymous = AsyncWebClient(base_url=fake.api_url)
    installed = await anonymous.oauth_v2_access(client_id="cid", client_secret="secret", code="code-r")
    assert installed["access_token"] == "xoxb-T9-old" and installed["expires_in"] == 60
    assert installed["refresh_token"].startswith("xoxe-1-")

    refreshed = await anonymous.oauth_v2_access(
        client_id="cid", client_secret="secret", grant_type="refresh_token", refresh_token=installed["refresh_token"]
    )
    assert refreshed["token_type"] == "bot" and refreshed["expires_in"] == 43200
    assert refreshed["access_token"] not in ("xoxb-T9-old", "") and refreshed["refresh_token"].startswith("xoxe-1-")
    assert refreshed["refresh_token"] != installed["refresh_token"]
    assert refreshed["team"] == {"id": "T9", "name": "Nine"} and refreshed["bot_user_id"] == "UBOT"
    old = await failure(AsyncWebClient("xoxb-T9-old", base_url=fake.api_url).auth_test())
    assert old.response["error"] == "token_expired"
    assert (await AsyncWebClient(refreshed["access_token"], base_url=fake.api_url).auth_test())["team_id"] == "T9"
    again = await failure(
        anonymous.oauth_v2_access(
            client_id="cid",
            client_secret="secret",
            grant_type="refresh_token",
            refresh_token=installed["refresh_token"],
        )
    )
    assert again.response["error"] == "invalid_refresh_token", "a refresh token works once"
    refresh = fake.calls_to("oauth.v2.access")[1]
    assert refresh.params["grant_type"] == "refresh_token" and refresh.team_id == "T9"


# -- native streaming -------------------------------------------------------------------------------------


async def error_of(call) -> str:
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value.response["error"]


async def test_a_stream_in_a_channel_needs_its_recipient_and_grows_until_stopped(make):
    fake, client = await make()
    assert (
        await error_of(client.chat_startStream(channel="C1", thread_ts="1.0", markdown_text="Hi"))
        == "missing_recipient_team_id"
    )
    assert (
        await error_of(
            client.chat_startStream(channel="C1", thread_ts="1.0", markdown_text="Hi", recipient_team_id="T1")
        )
        == "missing_recipient_user_id"
    )
    started = await client.chat_startStream(
        channel="C1", thread_ts="1.0", markdown_text="Hello", recipient_team_id="T1", recipient_user_id="U1"
    )
    ts = started["ts"]
    await client.chat_appendStream(channel="C1", ts=ts, markdown_text=", world")
    assert await error_of(client.chat_update(channel="C1", ts=ts, text="x")) == "streaming_state_conflict"
    assert (
        await error_of(client.chat_appendStream(channel="C1", ts=ts, chunks=[{"type": "markdown_text", "text": "!"}]))
        == "streaming_mode_mismatch"
    )
    feedback = [
        {
            "type": "context_actions",
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": "answer_feedback",
                    "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "good"},
                    "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "bad"},
                }
            ],
        }
    ]
    await client.chat_stopStream(channel="C1", ts=ts, markdown_text=".", blocks=feedback)
    (message,) = fake.thread("C1", "1.0")
    assert fake.visible_markdown(message) == "Hello, world." and message.blocks == feedback
    assert (
        await error_of(client.chat_appendStream(channel="C1", ts=ts, markdown_text="more"))
        == "message_not_in_streaming_state"
    )
    await client.chat_update(channel="C1", ts=ts, text="edited after the stream", blocks=[])
    assert fake.visible_markdown(message) == "edited after the stream"


async def test_a_stream_expires_half_rendered_and_can_then_be_edited(make, clock):
    fake, client = await make(stream_timeout=300)
    ts = (await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="partial"))["ts"]
    clock.now += 301
    assert (
        await error_of(client.chat_appendStream(channel="D1", ts=ts, markdown_text="x"))
        == "message_not_in_streaming_state"
    )
    assert await error_of(client.chat_stopStream(channel="D1", ts=ts)) == "message_not_in_streaming_state"
    await client.chat_update(channel="D1", ts=ts, text="whole", blocks=[{"type": "markdown", "text": "whole answer"}])
    assert fake.visible_markdown(fake.thread("D1", "1.0")[0]) == "whole answer"


async def test_streams_are_refused_where_slack_refuses_them(make):
    fake, client = await make()
    fake.stream_unsupported_channels.add("G1")
    assert (
        await error_of(
            client.chat_startStream(
                channel="G1", thread_ts="1.0", markdown_text="x", recipient_team_id="T1", recipient_user_id="U1"
            )
        )
        == "channel_type_not_supported"
    )
    fake.messages_tab_disabled = True
    assert (
        await error_of(client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x"))
        == "messages_tab_disabled"
    )
    assert (
        await error_of(
            client.chat_startStream(
                channel="C1",
                thread_ts="1.0",
                chunks=[{"type": "nonsense"}],
                recipient_team_id="T1",
                recipient_user_id="U1",
            )
        )
        == "invalid_chunks"
    )
    assert (
        await error_of(
            client.chat_startStream(
                channel="C1",
                thread_ts="1.0",
                markdown_text="x" * 12_001,
                recipient_team_id="T1",
                recipient_user_id="U1",
            )
        )
        == "msg_too_long"
    )


async def test_each_streaming_method_has_its_own_budget(make):
    _fake, client = await make(stream_starts_per_minute=2, stream_appends_per_minute=3, post_burst=10)
    ts = [(await client.chat_startStream(channel="D1", thread_ts=f"{n}.0", markdown_text="a"))["ts"] for n in range(2)]
    with pytest.raises(SlackApiError) as raised:
        await client.chat_startStream(channel="D1", thread_ts="9.0", markdown_text="a")
    assert raised.value.response.status_code == 429 and int(raised.value.response.headers["Retry-After"]) >= 1
    for _ in range(3):
        await client.chat_appendStream(channel="D1", ts=ts[0], markdown_text="b")
    assert await error_of(client.chat_appendStream(channel="D1", ts=ts[1], markdown_text="b")) == "ratelimited"
    await client.chat_stopStream(channel="D1", ts=ts[1], markdown_text="c")  # stops are counted apart


async def test_the_users_stop_ends_the_sessions_streams_and_names_them(make):
    fake, client = await make()
    await client.agents_sessions_setStatus(
        channel_id="C1", thread_ts="1.0", status="processing", initiator_user_id="U1"
    )
    assert fake.sessions[("C1", "1.0")]["status"] == "processing"
    ts = (
        await client.chat_startStream(
            channel="C1", thread_ts="1.0", markdown_text="working on it", recipient_team_id="T1", recipient_user_id="U1"
        )
    )["ts"]
    event = fake.press_stop("C1", "1.0", "U1")
    assert event["type"] == "agent_session_stopped" and event["streaming_message_ts"] == [ts]
    assert await error_of(client.chat_appendStream(channel="C1", ts=ts, markdown_text="x")) == "stopped_by_user"
    await client.agents_sessions_setStatus(channel_id="C1", thread_ts="1.0", status="active")
    assert [status for _, status in fake.sessions[("C1", "1.0")]["history"]] == ["processing", "active"]
    assert (
        await error_of(client.agents_sessions_setStatus(channel_id="C1", thread_ts="1.0", status="busy"))
        == "invalid_arguments"
    )
    fake.agent_session_stopped_subscribed = False
    answered = await client.agents_sessions_setStatus(channel_id="C1", thread_ts="1.0", status="processing")
    assert answered["warning"] == "missing_agent_session_stopped_event_subscription"


async def test_a_thread_status_shows_until_the_app_replies_or_two_minutes_pass(make, clock):
    fake, client = await make()
    await client.assistant_threads_setStatus(
        channel_id="C1", thread_ts="1.0", status="is thinking…", loading_messages=["Reading the thread…"]
    )
    assert fake.thread_status("C1", "1.0") == "is thinking…"
    await client.chat_postMessage(channel="C1", thread_ts="1.0", text="answer")
    assert fake.thread_status("C1", "1.0") == ""
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts="2.0", status="is thinking…")
    clock.now += 121
    assert fake.thread_status("C1", "2.0") == ""
    assert (
        await error_of(
            client.assistant_threads_setStatus(
                channel_id="C1", thread_ts="3.0", status="x", loading_messages=[str(n) for n in range(11)]
            )
        )
        == "invalid_arguments"
    )


async def test_files_upload_v2_asks_for_a_url_sends_the_bytes_and_shares_them(make):
    fake, client = await make()
    shared = await client.files_upload_v2(
        channel="D0001", filename="usage.csv", content="a,b\n1,2\n", title="Usage", initial_comment="here it is"
    )
    assert shared["file"]["title"] == "Usage"
    [upload] = fake.files.values()
    assert (upload.content, upload.channel, upload.filename) == (b"a,b\n1,2\n", "D0001", "usage.csv")
    [message] = fake.channel_messages("D0001")
    assert message.text == "here it is" and message.ts == upload.message_ts
    assert [call.method for call in fake.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]

    asked = await client.files_getUploadURLExternal(filename="x.txt", length=10)
    refused = await failure(client.files_completeUploadExternal(files=[{"id": asked["file_id"]}], channel_id="D0001"))
    assert refused.response["error"] == "file_not_found", "nothing was sent to the upload URL"
    assert (await failure(client.files_getUploadURLExternal(filename="x.txt", length=0))).response[
        "error"
    ] == "invalid_arguments"


# -- files people share -------------------------------------------------------------------------------------

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


async def fetch(url: str, token: str | None = None) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.read()


async def test_a_shared_file_is_the_object_slack_puts_in_the_event(make):
    fake, _ = await make()
    shared = fake.add_file("T1", name="Q1 Report.pdf", mimetype="application/pdf", content=PDF, channel="C1")
    assert shared["id"].startswith("F") and shared["id"] in fake.files
    assert {
        k: shared[k]
        for k in (
            "name",
            "title",
            "mimetype",
            "filetype",
            "pretty_type",
            "size",
            "user",
            "mode",
            "is_external",
            "file_access",
            "user_team",
        )
    } == {
        "name": "Q1 Report.pdf",
        "title": "Q1 Report.pdf",
        "mimetype": "application/pdf",
        "filetype": "pdf",
        "pretty_type": "PDF",
        "size": len(PDF),
        "user": "U0001",
        "mode": "hosted",
        "is_external": False,
        "file_access": "visible",
        "user_team": "T1",
    }
    base = f"http://127.0.0.1:{fake.port}/files-pri/T1-{shared['id']}"
    assert shared["url_private"] == f"{base}/q1_report.pdf"
    assert shared["url_private_download"] == f"{base}/download/q1_report.pdf"
    assert shared["permalink"] == f"https://acme.slack.com/files/U0001/{shared['id']}/q1_report.pdf"
    assert shared["created"] == shared["timestamp"] > 0
    text = fake.add_file("T1", name="notes.txt", mimetype="text/plain", content=b"hi")
    assert (text["filetype"], text["pretty_type"]) == ("text", "Plain Text")

    event = fake.file_share_event([shared], channel="D0001", text="what does this say?")
    assert event["files"] == [shared] and event["subtype"] == "file_share" and event["channel_type"] == "im"
    assert event["upload"] is True and event["user"] == "U0001" and event["ts"] == event["event_ts"]
    mention = fake.file_share_event([shared], channel="C1", text="<@UBOT> summarise", thread_ts="1.0", mention=True)
    assert mention["type"] == "app_mention" and "subtype" not in mention and mention["thread_ts"] == "1.0"
    fake.add_channel("G9", "mpim")
    assert fake.file_share_event([shared], channel="G9")["channel_type"] == "mpim"
    assert fake.file_share_event([shared], channel="G8")["channel_type"] == "group"


async def test_downloads_need_a_bot_token_of_the_workspace_with_files_read(make):
    fake, _ = await make()
    fake.add_workspace("T2", "xoxb-T2", scopes=MANIFEST_SCOPES)
    fake.add_workspace("T3", "xoxb-T3-narrow", scopes="chat:write,users:read")
    shared = fake.add_file("T1", name="report.pdf", mimetype="application/pdf", content=PDF)
    narrow = fake.add_file("T3", name="x.csv", mimetype="text/csv", content=b"a,b\n")

    status, content_type, body = await fetch(shared["url_private_download"], TOKEN)
    assert (status, content_type, body) == (200, "application/pdf", PDF)
    assert (await fetch(shared["url_private"], TOKEN))[2] == PDF
    for token in (None, "xoxb-nope", "xoxb-T2"):  # none, invalid, another workspace's
        status, content_type, body = await fetch(shared["url_private_download"], token)
        assert status == 200 and content_type == "text/html; charset=utf-8" and b"Sign in" in body, token
    status, content_type, _ = await fetch(narrow["url_private_download"], "xoxb-T3-narrow")
    assert (status, content_type) == (200, "text/html; charset=utf-8"), "without files:read: the sign-in page"

    fake.delete_file(shared["id"])
    assert (await fetch(shared["url_private_download"], TOKEN))[0] == 404
    assert [(d.file_id, d.token, d.status, d.served) for d in fake.downloads] == [
        (shared["id"], TOKEN, 200, "file"),
        (shared["id"], TOKEN, 200, "file"),
        (shared["id"], None, 200, "login_page"),
        (shared["id"], "xoxb-nope", 200, "login_page"),
        (shared["id"], "xoxb-T2", 200, "login_page"),
        (narrow["id"], "xoxb-T3-narrow", 200, "login_page"),
        (shared["id"], TOKEN, 404, "not_found"),
    ]
    assert fake.downloads[0].complete and fake.downloads[0].sent == len(PDF)


async def test_a_download_streams_so_the_client_can_stop_early(make):
    fake, _ = await make()
    fake.download_chunk_delay = 0.01
    big = bytes(4 * 1024 * 1024)
    shared = fake.add_file("T1", name="big.bin", mimetype="application/octet-stream", content=big)
    async with aiohttp.ClientSession() as http:
        response = await http.get(shared["url_private_download"], headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.headers["Content-Length"] == str(len(big))
        first = await response.content.readexactly(1024)
        response.close()
    assert first == big[:1024]
    (download,) = fake.downloads
    for _ in range(500):
        if download.done:
            break
        await asyncio.sleep(0.01)
    assert download.done and not download.complete and download.sent < len(big)


async def test_files_info_answers_like_slack(make):
    fake, client = await make()
    fake.add_workspace("T2", "xoxb-T2")
    shared = fake.add_file("T1", name="chart.png", mimetype="image/png", content=b"\x89PNG", channel="C1")
    info = await client.files_info(file=shared["id"])
    assert info["file"]["id"] == shared["id"] and info["file"]["url_private"] == shared["url_private"]
    assert info["file"]["channels"] == ["C1"] and "C1" in info["file"]["shares"]["public"]
    assert info["comments"] == [] and info["response_metadata"] == {"next_cursor": ""}
    assert await error_of(client.files_info(file="F99999999")) == "file_not_found"
    other = AsyncWebClient("xoxb-T2", base_url=fake.api_url)
    assert await error_of(other.files_info(file=shared["id"])) == "file_not_found", "another workspace's file"
    fake.delete_file(shared["id"])
    assert await error_of(client.files_info(file=shared["id"])) == "file_deleted"


async def test_a_slack_connect_file_needs_files_info_and_may_be_out_of_reach(make):
    fake, client = await make()
    stub = fake.add_file("T1", name="deck.pdf", mimetype="application/pdf", content=PDF, slack_connect=True)
    assert stub == {
        "id": stub["id"],
        "mode": "file_access",
        "file_access": "check_file_info",
        "created": 0,
        "timestamp": 0,
        "user": "",
    }
    full = (await client.files_info(file=stub["id"]))["file"]
    assert full["user_team"] == "TEXTERNAL" and f"/files-pri/TEXTERNAL-{stub['id']}/" in full["url_private_download"]
    assert (await fetch(full["url_private_download"], TOKEN))[2] == PDF

    hidden = fake.add_file(
        "T1", name="secret.pdf", mimetype="application/pdf", content=PDF, slack_connect=True, accessible=False
    )
    assert await error_of(client.files_info(file=hidden["id"])) == "access_denied"
    url = f"http://127.0.0.1:{fake.port}/files-pri/TEXTERNAL-{hidden['id']}/download/secret.pdf"
    assert (await fetch(url, TOKEN))[1].startswith("text/html")


async def test_files_uploaded_by_the_bot_have_files_info_too(make):
    _, client = await make()
    shared = await client.files_upload_v2(channel="D0001", filename="usage.csv", content="a,b\n", title="Usage")
    info = (await client.files_info(file=shared["file"]["id"]))["file"]
    assert (info["mimetype"], info["filetype"], info["user"], info["ims"]) == ("text/csv", "csv", "UBOT", ["D0001"])


# -- scopes -------------------------------------------------------------------------------------------------


async def test_a_token_without_the_methods_scope_gets_missing_scope(make):
    fake, _ = await make()
    fake.add_workspace("T2", "xoxb-narrow", scopes="chat:write,commands")
    narrow = AsyncWebClient("xoxb-narrow", base_url=fake.api_url)
    refused = await failure(narrow.users_info(user="U1"))
    assert refused.response.status_code == 200
    assert refused.response.data == {
        "ok": False,
        "error": "missing_scope",
        "needed": "users:read",
        "provided": "chat:write,commands",
    }
    assert refused.response.headers["x-oauth-scopes"] == "chat:write,commands"
    assert refused.response.headers["x-accepted-oauth-scopes"] == "users:read"
    needed = {
        "files.info": narrow.files_info(file="F1"),
        "files.getUploadURLExternal": narrow.files_getUploadURLExternal(filename="a.txt", length=1),
        "assistant.threads.setSuggestedPrompts": narrow.assistant_threads_setSuggestedPrompts(
            channel_id="D1", prompts=[{"title": "a", "message": "b"}]
        ),
        "conversations.open": narrow.conversations_open(users="U1"),
        "conversations.open users": narrow.conversations_open(users="U1,U2"),
        "conversations.replies C": narrow.conversations_replies(channel="C1", ts="1.0"),
    }
    answers = {name: (await failure(call)).response["needed"] for name, call in needed.items()}
    assert answers == {
        "files.info": "files:read",
        "files.getUploadURLExternal": "files:write",
        "assistant.threads.setSuggestedPrompts": "assistant:write",
        "conversations.open": "im:write",
        "conversations.open users": "mpim:write",
        "conversations.replies C": "channels:history",
    }
    # What needs only chat:write, or nothing:
    assert (await narrow.auth_test())["ok"] and (await narrow.chat_postMessage(channel="C1", text="hi"))["ok"]
    assert (await narrow.assistant_threads_setStatus(channel_id="C1", thread_ts="1.0", status="thinking"))["ok"]
    assert (await narrow.agents_sessions_setStatus(channel_id="C1", thread_ts="1.0", status="processing"))["ok"]
    assert (await narrow.views_publish(user_id="U1", view={"type": "home", "blocks": []}))["ok"]
    fake.add_workspace("T3", "xoxb-none", scopes="")
    nothing = await failure(AsyncWebClient("xoxb-none", base_url=fake.api_url).chat_postMessage(channel="C1", text="x"))
    assert (nothing.response["needed"], nothing.response["provided"]) == ("chat:write", "")
    assert fake.channel_messages("C1")[0].text == "hi" and len(fake.channel_messages("C1")) == 1


async def test_history_scopes_follow_the_conversation_type(make):
    fake, _ = await make(replies_limit_per_minute=100)
    without = ",".join(s for s in MANIFEST_SCOPES.split(",") if not s.endswith(":history"))
    fake.add_workspace("T2", "xoxb-nohistory", scopes=without)
    client = AsyncWebClient("xoxb-nohistory", base_url=fake.api_url)
    fake.add_channel("C0MPIM", "mpim")
    fake.add_channel("C0PRIV", "private")
    expected = {
        "C1": "channels:history",
        "G1": "groups:history",
        "C0PRIV": "groups:history",
        "D1": "im:history",
        "C0MPIM": "mpim:history",
    }
    for channel, scope in expected.items():
        assert (await failure(client.conversations_replies(channel=channel, ts="1.0"))).response["needed"] == scope
    fake.add_workspace("T4", "xoxb-mpim", scopes="chat:write,mpim:history")
    mpim = AsyncWebClient("xoxb-mpim", base_url=fake.api_url)
    assert (await mpim.conversations_replies(channel="C0MPIM", ts="1.0"))["ok"]
    assert (await mpim.chat_postMessage(channel="C0MPIM", text="hello all"))["ok"], "posting needs only chat:write"
    assert (await failure(mpim.conversations_replies(channel="D1", ts="1.0"))).response["needed"] == "im:history"


async def test_group_dms_are_told_apart_by_conversations_info(make):
    fake, _ = await make()
    fake.add_workspace("T1", TOKEN, scopes=MANIFEST_SCOPES + ",channels:read,groups:read,mpim:read,mpim:write")
    client = AsyncWebClient(TOKEN, base_url=fake.api_url)
    opened = (await client.conversations_open(users="U0001,U0002"))["channel"]["id"]
    fake.add_channel("C0MPIM", "mpim")
    kinds = {}
    for channel in (opened, "C0MPIM", "C1", "G1", "D1"):
        info = (await client.conversations_info(channel=channel))["channel"]
        kinds[channel] = {flag for flag in ("is_channel", "is_group", "is_im", "is_mpim", "is_private") if info[flag]}
    assert kinds == {
        opened: {"is_mpim", "is_private"},
        "C0MPIM": {"is_mpim", "is_private"},
        "C1": {"is_channel"},
        "G1": {"is_group", "is_private"},
        "D1": {"is_im", "is_private"},
    }
    fake.add_workspace("T2", "xoxb-noread", scopes="chat:write,im:read")
    noread = AsyncWebClient("xoxb-noread", base_url=fake.api_url)
    assert (await failure(noread.conversations_info(channel=opened))).response["needed"] == "mpim:read"
    assert (await noread.conversations_info(channel="D1"))["channel"]["user"] == "U1"


async def test_an_oauth_install_is_granted_the_manifests_scopes_by_default(make):
    fake, _ = await make()
    fake.add_oauth_code("code-s", "T9", bot_token="xoxb-T9")
    anonymous = AsyncWebClient(base_url=fake.api_url)
    payload = await anonymous.oauth_v2_access(client_id="c", client_secret="s", code="code-s")
    assert payload["scope"] == MANIFEST_SCOPES == fake.workspaces["T9"].scopes


# -- conversations.replies paging ---------------------------------------------------------------------------


def long_thread(fake: FakeSlack, count: int = 400, channel: str = "C1") -> tuple[str, list[str]]:
    parent = "1700000000.000100"
    stamps = [parent] + [f"{1700000001 + n}.000100" for n in range(count - 1)]
    messages = [
        {"type": "message", "user": "U1", "text": f"message {n}", "ts": ts, **({"thread_ts": parent} if n else {})}
        for n, ts in enumerate(stamps)
    ]
    fake.add_history(channel, parent, list(reversed(messages)))
    return parent, stamps


async def test_a_400_message_thread_pages_forward_15_at_a_time(make):
    fake, client = await make(replies_limit_per_minute=1000)
    parent, stamps = long_thread(fake)
    first = await client.conversations_replies(channel="C1", ts=parent, limit=200)
    assert [m["ts"] for m in first["messages"]] == stamps[:15], "the parent first, then the oldest replies"
    assert first["has_more"] is True and first["response_metadata"]["next_cursor"]
    seen, response, pages = [], first, 1
    while True:
        seen += [m["ts"] for m in response["messages"]]
        cursor = response["response_metadata"]["next_cursor"]
        if not cursor:
            break
        response = await client.conversations_replies(channel="C1", ts=parent, cursor=cursor)
        assert parent not in [m["ts"] for m in response["messages"]], "later pages leave the parent out"
        pages += 1
    assert seen == stamps and pages == 27 and response["has_more"] is False
    three = await client.conversations_replies(channel="C1", ts=parent, limit=3)
    assert [m["ts"] for m in three["messages"]] == stamps[:3]
    assert await error_of(client.conversations_replies(channel="C1", ts=parent, cursor="bm9wZQ==")) == "invalid_cursor"


async def test_latest_reads_the_newest_replies_oldest_first_and_pages_back(make):
    fake, client = await make(replies_limit_per_minute=1000)
    parent, stamps = long_thread(fake)
    newest = await client.conversations_replies(channel="C1", ts=parent, latest=stamps[-1], inclusive=True)
    assert [m["ts"] for m in newest["messages"]] == [parent, *stamps[-14:]]
    assert newest["has_more"] is True
    older = await client.conversations_replies(
        channel="C1", ts=parent, latest=stamps[-1], inclusive=True, cursor=newest["response_metadata"]["next_cursor"]
    )
    assert [m["ts"] for m in older["messages"]] == stamps[-29:-14]
    exclusive = await client.conversations_replies(channel="C1", ts=parent, latest=stamps[-1])
    assert [m["ts"] for m in exclusive["messages"]] == [parent, *stamps[-15:-1]]
    since = await client.conversations_replies(channel="C1", ts=parent, oldest=stamps[-4])
    assert [m["ts"] for m in since["messages"]] == [parent, *stamps[-3:]] and since["has_more"] is False
    assert since["response_metadata"]["next_cursor"] == ""
    assert await error_of(client.conversations_replies(channel="C1", ts=parent, latest="soon")) == "invalid_ts_latest"


async def test_a_short_thread_read_back_from_latest_fits_on_one_page(make):
    fake, client = await make(replies_limit_per_minute=1000)
    parent, stamps = long_thread(fake, count=11)
    whole = await client.conversations_replies(channel="C1", ts=parent, latest=stamps[-1], inclusive=True)
    assert [m["ts"] for m in whole["messages"]] == stamps and whole["has_more"] is False
    assert whole["response_metadata"]["next_cursor"] == ""
    one = await client.conversations_replies(channel="C1", ts=parent, limit=1)
    assert [m["ts"] for m in one["messages"]] == [parent] and one["has_more"] is True
    rest = await client.conversations_replies(channel="C1", ts=parent, cursor=one["response_metadata"]["next_cursor"])
    assert [m["ts"] for m in rest["messages"]] == stamps[1:] and rest["has_more"] is False
