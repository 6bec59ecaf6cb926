"""The real bot on a free port, talking to local fakes of Slack and Anthropic; tests talk to it over HTTP
with requests signed the way Slack signs them."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.server import RunningBot, start_bot
from config import Settings, load_settings
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.slack import FakeSlack
from tests.fakes.stripe import FakeStripe

STRIPE_SECRET_KEY = "sk_test_bot_4242"
STRIPE_WEBHOOK_SECRET = "whsec_bot_secret"
PUBLIC_URL = "https://bot.example.com"

SIGNING_SECRET = "test-signing-secret"
TEAM = "T0001"
BOT_TOKEN = "xoxb-test-token-T0001"
BOT_USER = "UBOT"

CLIENT_ID = "111.222"
CLIENT_SECRET = "oauth-client-secret"
# Settings overrides for OAuth mode: no bot token, the app's OAuth credentials; no workspace is installed.
OAUTH = {"slack_bot_token": None, "slack_client_id": CLIENT_ID, "slack_client_secret": CLIENT_SECRET}
STATE_COOKIE = "slack-app-oauth-state"
_ids = itertools.count(1)
_ts = itertools.count(1)


def new_ts() -> str:
    return f"{1_700_000_000 + next(_ts)}.000100"


def test_settings(
    database_url: str, slack: FakeSlack, claude: FakeAnthropic, stripe: FakeStripe, **overrides
) -> Settings:
    values = {
        "stripe_secret_key": STRIPE_SECRET_KEY,
        "stripe_webhook_secret": STRIPE_WEBHOOK_SECRET,
        "stripe_api_base": stripe.api_base,
        "stripe_max_network_retries": 0,
        "public_url": PUBLIC_URL,
        "credit_packs": "500:5.00,2000:18.00",
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": slack.api_url,
        "anthropic_api_key": "test-anthropic-key",
        "anthropic_base_url": claude.base_url,
        "database_url": database_url,
        "port": 0,
        "slack_update_interval": 0.2,
        "claude_retry_max_wait": 1.0,
        "free_credits": 1_000_000,
        "ai_credits_per_message": 1,
        "sweep_interval_seconds": 3600,
        # The edit path, whose posts and edits most tests look at; tests of native streaming set "native" or "auto".
        "slack_streaming": "edit",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)


@dataclass
class Sent:
    status: int
    event_id: str
    ts: str
    body: str = ""


@dataclass
class BotHarness:
    slack: FakeSlack
    claude: FakeAnthropic
    stripe: FakeStripe
    bot: RunningBot | None  # None: the bot runs in another process, on `port` (tests/process.py)
    http: aiohttp.ClientSession
    signing_secret: str = SIGNING_SECRET
    sent: list[Sent] = field(default_factory=list)
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port or self.bot.port}"

    @property
    def services(self):
        return self.bot.services

    def signed_headers(self, body: str, *, timestamp: int | None = None, secret: str | None = None) -> dict:
        timestamp = int(time.time()) if timestamp is None else timestamp
        signature = SignatureVerifier(secret or self.signing_secret).generate_signature(
            timestamp=str(timestamp), body=body
        )
        return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}

    async def post_signed(
        self, body: str, content_type: str, *, headers: dict | None = None, **sign
    ) -> tuple[int, str]:
        all_headers = {"Content-Type": content_type, **self.signed_headers(body, **sign), **(headers or {})}
        async with self.http.post(f"{self.url}/slack/events", data=body.encode(), headers=all_headers) as response:
            return response.status, await response.text()

    async def send_event(
        self,
        event: dict,
        *,
        team: str = TEAM,
        event_id: str | None = None,
        headers: dict | None = None,
        enterprise_id: str | None = None,
        org_wide: bool = False,
        **sign,
    ) -> Sent:
        """An Events API delivery; `org_wide` as Slack sends it for an org-wide install on Enterprise Grid
        (the authorization names the org, not the workspace)."""
        event_id = event_id or f"Ev{next(_ids):08d}"
        body = self.envelope(event, team=team, event_id=event_id, enterprise_id=enterprise_id, org_wide=org_wide)
        status, text = await self.post_signed(body, "application/json", headers=headers, **sign)
        sent = Sent(status, event_id, event.get("ts", ""), text)
        self.sent.append(sent)
        return sent

    @staticmethod
    def envelope(
        event: dict, *, team: str = TEAM, event_id: str, enterprise_id: str | None = None, org_wide: bool = False
    ) -> str:
        """The Events API body that carries `event`."""
        authorization = {
            "team_id": None if org_wide else team,
            "user_id": BOT_USER,
            "is_bot": True,
            "enterprise_id": enterprise_id,
            "is_enterprise_install": org_wide,
        }
        envelope = {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [authorization],
        }
        if enterprise_id:
            envelope["enterprise_id"] = enterprise_id
        return json.dumps(envelope)

    @staticmethod
    def mention_event(text: str, *, channel: str = "C0001", user: str = "U0001", team: str = TEAM) -> dict:
        ts = new_ts()
        return {
            "type": "app_mention",
            "user": user,
            "text": f"<@{BOT_USER}> {text}".rstrip(),
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": team,
        }

    async def mention(
        self,
        text: str,
        *,
        channel: str = "C0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        team: str = TEAM,
        files: list[dict] | None = None,
        **kwargs,
    ) -> Sent:
        event = self.mention_event(text, channel=channel, user=user, team=team)
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["files"], event["upload"] = files, True
        return await self.send_event(event, team=team, **kwargs)

    async def dm(
        self,
        text: str,
        *,
        channel: str = "D0001",
        user: str = "U0001",
        thread_ts: str | None = None,
        team: str = TEAM,
        files: list[dict] | None = None,
        **kwargs,
    ) -> Sent:
        ts = new_ts()
        event = {
            "type": "message",
            "channel_type": "im",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": team,
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:  # Slack sends a message that shares files as a file_share
            event["files"], event["upload"], event["subtype"] = files, True, "file_share"
        return await self.send_event(event, team=team, **kwargs)

    async def command(
        self, command: str, text: str = "", *, user: str = "U0001", team: str = TEAM, channel: str = "C0001"
    ) -> tuple[int, dict | str]:
        form = {
            "token": "legacy",
            "team_id": team,
            "team_domain": "acme",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": "someone",
            "command": command,
            "text": text,
            "api_app_id": "A0001",
            "response_url": self.response_url(),
            "trigger_id": f"trig{next(_ids)}",
        }
        status, body = await self.post_signed(urlencode(form), "application/x-www-form-urlencoded")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    async def click_in_home(
        self, action_id: str, value: str, *, user: str = "U0001", team: str = TEAM, block_id: str = "buy_credits"
    ) -> tuple[int, str]:
        """Press a button of the Home tab the bot last published for the user: no response_url, a view container."""
        view = self.slack.home_views[(team, user)]
        payload = {
            "type": "block_actions",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "team_id": team, "name": "someone"},
            "api_app_id": "A0001",
            "token": "legacy",
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": f"trig{next(_ids)}",
            "view": view,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "type": "button",
                    "value": value,
                    "action_ts": str(time.time()),
                }
            ],
        }
        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    async def submit_view(self, view: dict, values: dict, *, user: str = "U0001", team: str = TEAM) -> tuple[int, str]:
        """Submit a modal the bot opened, as Slack's view_submission says it; `values` is state.values
        ({block_id: {action_id: {"type": ..., "value"/"selected_user"/...}}})."""
        submitted = {**view, "state": {"values": values}}
        payload = {
            "type": "view_submission",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "team_id": team, "name": "someone"},
            "api_app_id": "A0001",
            "token": "legacy",
            "trigger_id": f"trig{next(_ids)}",
            "view": submitted,
            "response_urls": [],
        }
        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    async def open_home(self, *, user: str = "U0001", team: str = TEAM, **kwargs) -> Sent:
        event = {
            "type": "app_home_opened",
            "user": user,
            "channel": f"D{user[1:]}",
            "tab": "home",
            "event_ts": new_ts(),
        }
        return await self.send_event(event, team=team, **kwargs)

    async def home(
        self, *, user: str = "U0001", team: str = TEAM, newer_than: dict | None = None, timeout: float = 10.0
    ) -> dict:
        """The Home tab the bot published for the user, once there is one (newer than `newer_than`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            view = self.slack.home_views.get((team, user))
            if view is not None and (newer_than is None or view["hash"] != newer_than["hash"]):
                return view
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {'new ' if newer_than else ''}Home tab published for {user} in {team}")
            await asyncio.sleep(0.02)

    # -- OAuth mode ------------------------------------------------------------------------------------

    async def start_install(self) -> tuple[int, str, str | None]:
        """GET /slack/install: (status, page, state); the state travels in the Add to Slack link and a cookie."""
        async with self.http.get(f"{self.url}/slack/install") as response:
            page = await response.text()
            cookie = response.cookies.get(STATE_COOKIE)
        link = re.search(r'<a href="([^"]+)"', page)
        state = parse_qs(urlparse(link.group(1).replace("&amp;", "&")).query).get("state", [None])[0] if link else None
        assert cookie is None or cookie.value == state, "the cookie carries the same state as the link"
        return response.status, page, state

    async def finish_install(self, code: str, state: str | None, *, cookie_state: str | None = None) -> tuple[int, str]:
        """The browser comes back from Slack to GET /slack/oauth_redirect with the code and the state."""
        cookie_state = state if cookie_state is None else cookie_state
        headers = {"Cookie": f"{STATE_COOKIE}={cookie_state}"} if cookie_state else {}
        query = urlencode({"code": code, **({"state": state} if state else {})})
        async with self.http.get(
            f"{self.url}/slack/oauth_redirect?{query}", headers=headers, allow_redirects=False
        ) as response:
            return response.status, await response.text()

    async def install(
        self, team: str = TEAM, *, user: str = "U0001", code: str | None = None, **payload
    ) -> tuple[int, str]:
        """A whole install of the app into `team` by `user`, as a browser does it."""
        code = code or f"code-{team}-{next(_ids)}"
        status, _, state = await self.start_install()
        assert status == 200 and state
        self.slack.add_oauth_code(code, team, user_id=user, **payload)
        return await self.finish_install(code, state)

    async def uninstall(self, team: str = TEAM, **kwargs) -> Sent:
        """Someone removes the app: Slack revokes the token and sends app_uninstalled."""
        self.slack.remove_workspace(team)
        return await self.send_event({"type": "app_uninstalled", "event_ts": new_ts()}, team=team, **kwargs)

    async def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U0001",
        team: str = TEAM,
        message_ts: str = "1700000000.000001",
    ) -> tuple[int, str]:
        """Press a button of an ephemeral message, as Slack's block_actions payload says it."""
        payload = {
            "type": "block_actions",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "team_id": team, "name": "someone"},
            "api_app_id": "A0001",
            "token": "legacy",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": "C0001", "is_ephemeral": True},
            "trigger_id": f"trig{next(_ids)}",
            "channel": {"id": "C0001", "name": "general"},
            "response_url": self.response_url(),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "buy_credits",
                    "type": "button",
                    "value": value,
                    "action_ts": str(time.time()),
                }
            ],
        }
        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    async def press(self, message, action_id: str, *, user: str = "U0001", team: str = TEAM) -> tuple[int, str]:
        """Click the element `action_id` of a (non-ephemeral) message the bot posted, as Slack reports it: a
        feedback button by `value` ("good"/"bad" after a colon: "answer_feedback:good")."""
        action_id, _, chosen = action_id.partition(":")
        for block in message.blocks or []:
            for element in block.get("elements") or []:
                if element.get("action_id") != action_id:
                    continue
                if element["type"] == "feedback_buttons":
                    value = element["positive_button" if chosen == "good" else "negative_button"]["value"]
                else:
                    value = element.get("value", "")
                action = {
                    "action_id": action_id,
                    "block_id": block.get("block_id"),
                    "type": element["type"],
                    "value": value,
                    "action_ts": str(time.time()),
                }
                break
            else:
                continue
            break
        else:
            raise AssertionError(f"no {action_id} in the message's blocks: {message.blocks}")
        payload = {
            "type": "block_actions",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "team_id": team, "name": "someone"},
            "api_app_id": "A0001",
            "token": "legacy",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"trig{next(_ids)}",
            "channel": {"id": message.channel, "name": "general"},
            "message": {"type": "message", "ts": message.ts, "text": message.text},
            "response_url": self.response_url(),
            "actions": [action],
        }
        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    async def stripe_delivery(
        self, event: dict, *, secret: str = STRIPE_WEBHOOK_SECRET, signature: str | None = None
    ) -> tuple[int, str]:
        payload = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        signature = signature if signature is not None else self.stripe.sign(payload, secret)
        if signature:
            headers["Stripe-Signature"] = signature
        async with self.http.post(f"{self.url}/stripe/webhook", data=payload, headers=headers) as response:
            return response.status, await response.text()

    async def responses(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the bot has sent `count` messages to response_urls."""
        deadline = asyncio.get_running_loop().time() + timeout
        while sum(len(posts) for posts in self.slack.responses.values()) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} response_url messages, got {dict(self.slack.responses)}")
            await asyncio.sleep(0.02)

    def last_response(self) -> dict:
        """The latest message the bot sent to a response_url."""
        latest = max(self.slack.responses, key=lambda key: int(key))
        return self.slack.responses[latest][-1]

    def response_url(self) -> str:
        return self.slack.api_url.removesuffix("api/") + f"response/{next(_ids)}"

    async def idle(self, timeout: float = 15.0) -> None:
        """Wait until every answer in progress has finished."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.services.tasks):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.services.tasks)} answers still running after {timeout}s")
            await asyncio.sleep(0.02)

    def replies(self, channel: str, thread_ts: str | None) -> list:
        if thread_ts is None:
            return [m for m in self.slack.channel_messages(channel) if not m.thread_ts and not m.deleted]
        return self.slack.thread(channel, thread_ts)

    def reply_text(self, channel: str, thread_ts: str | None) -> str:
        return "\n".join(self.slack.visible_markdown(m) for m in self.replies(channel, thread_ts))


async def start_harness(database_url: str, **overrides) -> BotHarness:
    slack = FakeSlack()
    await slack.start()
    if overrides.get("slack_bot_token", BOT_TOKEN):
        slack.add_workspace(TEAM, BOT_TOKEN, bot_user_id=BOT_USER)
    else:  # OAuth mode: workspaces exist once installed; oauth.v2.access checks the app's credentials
        slack.client_id, slack.client_secret = overrides.get("slack_client_id"), overrides.get("slack_client_secret")
    if overrides.get("slack_app_token"):  # Socket Mode: the app-level token must open connections before the bot starts
        slack.add_app_token(overrides["slack_app_token"], TEAM)
    claude = FakeAnthropic()
    await claude.start()
    stripe = FakeStripe()
    await stripe.start()
    bot = await start_bot(test_settings(database_url, slack, claude, stripe, **overrides), host="127.0.0.1", port=0)
    slack.calls.clear()  # the start-up's auth.test (tests/test_operations_e2e.py): tests count what serving does
    return BotHarness(slack, claude, stripe, bot, aiohttp.ClientSession())


async def stop_harness(harness: BotHarness) -> None:
    await harness.http.close()
    await harness.bot.stop()
    await harness.claude.stop()
    await harness.stripe.stop()
    await harness.slack.stop()
