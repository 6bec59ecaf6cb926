"""The real bot on a free port, talking to local fakes of Slack and Anthropic; tests talk to it over HTTP
with requests signed the way Slack signs them."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

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
_ids = itertools.count(1)
_ts = itertools.count(1)


def new_ts() -> str:
    return f"{1_700_000_000 + next(_ts)}.000100"


def test_settings(database_url: str, slack: FakeSlack, claude: FakeAnthropic, stripe: FakeStripe, **overrides) -> Settings:
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
    bot: RunningBot
    http: aiohttp.ClientSession
    signing_secret: str = SIGNING_SECRET
    sent: list[Sent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.bot.port}"

    @property
    def services(self):
        return self.bot.services

    def signed_headers(self, body: str, *, timestamp: int | None = None, secret: str | None = None) -> dict:
        timestamp = int(time.time()) if timestamp is None else timestamp
        signature = SignatureVerifier(secret or self.signing_secret).generate_signature(timestamp=str(timestamp), body=body)
        return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}

    async def post_signed(self, body: str, content_type: str, *, headers: dict | None = None, **sign) -> tuple[int, str]:
        all_headers = {"Content-Type": content_type, **self.signed_headers(body, **sign), **(headers or {})}
        async with self.http.post(f"{self.url}/slack/events", data=body.encode(), headers=all_headers) as response:
            return response.status, await response.text()

    async def send_event(self, event: dict, *, team: str = TEAM, event_id: str | None = None, headers: dict | None = None, **sign) -> Sent:
        event_id = event_id or f"Ev{next(_ids):08d}"
        envelope = {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True, "enterprise_id": None}],
        }
        status, text = await self.post_signed(json.dumps(envelope), "application/json", headers=headers, **sign)
        sent = Sent(status, event_id, event.get("ts", ""), text)
        self.sent.append(sent)
        return sent

    async def mention(self, text: str, *, channel: str = "C0001", user: str = "U0001", thread_ts: str | None = None, team: str = TEAM, **kwargs) -> Sent:
        ts = new_ts()
        event = {"type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}".rstrip(), "ts": ts, "channel": channel, "event_ts": ts, "team": team}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return await self.send_event(event, team=team, **kwargs)

    async def dm(self, text: str, *, channel: str = "D0001", user: str = "U0001", thread_ts: str | None = None, team: str = TEAM, **kwargs) -> Sent:
        ts = new_ts()
        event = {"type": "message", "channel_type": "im", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts, "team": team}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return await self.send_event(event, team=team, **kwargs)

    async def command(self, command: str, text: str = "", *, user: str = "U0001", team: str = TEAM, channel: str = "C0001") -> tuple[int, dict | str]:
        form = {
            "token": "legacy", "team_id": team, "team_domain": "acme", "channel_id": channel, "channel_name": "general",
            "user_id": user, "user_name": "someone", "command": command, "text": text, "api_app_id": "A0001",
            "response_url": self.response_url(), "trigger_id": f"trig{next(_ids)}",
        }
        status, body = await self.post_signed(urlencode(form), "application/x-www-form-urlencoded")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    async def click(self, action_id: str, value: str, *, user: str = "U0001", team: str = TEAM, message_ts: str = "1700000000.000001") -> tuple[int, str]:
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
            "actions": [{"action_id": action_id, "block_id": "buy_credits", "type": "button", "value": value, "action_ts": str(time.time())}],
        }
        return await self.post_signed(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")

    async def stripe_delivery(self, event: dict, *, secret: str = STRIPE_WEBHOOK_SECRET, signature: str | None = None) -> tuple[int, str]:
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
    slack.add_workspace(TEAM, BOT_TOKEN, bot_user_id=BOT_USER)
    claude = FakeAnthropic()
    await claude.start()
    stripe = FakeStripe()
    await stripe.start()
    bot = await start_bot(test_settings(database_url, slack, claude, stripe, **overrides), host="127.0.0.1", port=0)
    return BotHarness(slack, claude, stripe, bot, aiohttp.ClientSession())


async def stop_harness(harness: BotHarness) -> None:
    await harness.http.close()
    await harness.bot.stop()
    await harness.claude.stop()
    await harness.stripe.stop()
    await harness.slack.stop()
