"""The bot's Home tab: the workspace's balance, this month's usage, the credit packs and a short how-to.

Published when someone opens the tab, after a purchase is granted (for the buyer), and after a pack
button in the tab is pressed (with the checkout link on top: a Home tab has no response_url)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk.web.async_client import AsyncWebClient

from billing import Balance, UsageSummary
from bot.services import Services
from bot.surfaces.admins import is_admin
from bot.surfaces.answer_controls import FeedbackCounts
from bot.surfaces.answer_settings import home_settings_blocks, overview_text
from bot.surfaces.limits_modal import home_limit_blocks
from bot.surfaces.top_up import top_up_offer

log = logging.getLogger(__name__)

HOW_TO = (
    "*How to ask*\n"
    "• In a channel: invite me, then mention me with your question. I answer in the thread; follow-ups in the"
    " thread continue the conversation.\n"
    "• Privately: write to me in the *Messages* tab.\n"
    "• `/credits` shows the same balance in any channel, and `/credits buy 500` buys a pack."
)


# The Messages tab's suggested prompts (at most four; the manifest's agent_view lists the same).
SUGGESTED_PROMPTS = [
    {"title": "Explain some code", "message": "Explain what this code does, step by step:"},
    {"title": "Draft a message", "message": "Help me write a short, friendly message to my team about"},
    {"title": "Summarize", "message": "Summarize the key points of the following text:"},
    {"title": "What can you do?", "message": "What can you help me with here in Slack?"},
]


def month_start(now: datetime) -> datetime:
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def usage_lines(usage: UsageSummary) -> list[str]:
    if not usage.answers:
        return ["No answers yet this month."]
    lines = [f"*{usage.total:,} credits* over {usage.answers:,} answers"]
    lines += [f"• <@{user}>: {spent:,}" if user else f"• everyone else: {spent:,}" for user, spent in usage.by_user]
    return lines


def feedback_line(counts: FeedbackCounts) -> str:
    if not counts.good and not counts.bad:
        return "No feedback on answers yet this month."
    return f"Feedback on answers: 👍 {counts.good:,} good · 👎 {counts.bad:,} bad"


def home_blocks(
    balance: Balance,
    usage: UsageSummary,
    *,
    month: str,
    price: str,
    top_up: list[dict] | None,
    top_up_note: str,
    feedback: FeedbackCounts = FeedbackCounts(0, 0),
    notice: list[dict] | None = None,
) -> list[dict]:
    blocks: list[dict] = list(notice or [])
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "Claude for this workspace"}})
    available = f"*Available:* {balance.available:,} credits"
    if balance.reserved:
        available += f" ({balance.reserved:,} held for answers in progress)"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{available}\n*An answer costs:* {price}"}})
    if balance.available <= 0:
        blocks.append(
            {
                "type": "section",
                "block_id": "no_credits",
                "text": {"type": "mrkdwn", "text": "⚠️ *No credits left.* I can't answer until someone buys a pack."},
            }
        )
    usage_text = f"*Usage in {month}*\n" + "\n".join(usage_lines(usage))
    blocks.append({"type": "section", "block_id": "usage", "text": {"type": "mrkdwn", "text": usage_text}})
    blocks.append(
        {"type": "context", "block_id": "feedback", "elements": [{"type": "mrkdwn", "text": feedback_line(feedback)}]}
    )
    if top_up:
        blocks.append({"type": "actions", "block_id": "buy_credits", "elements": top_up})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": top_up_note}]})
    blocks.append({"type": "divider"})
    blocks.append({"type": "section", "block_id": "how_to", "text": {"type": "mrkdwn", "text": HOW_TO}})
    return blocks


async def home_view(services: Services, team_id: str, *, notice: list[dict] | None = None, admin: bool = False) -> dict:
    since = month_start(services.clock())
    balance = await services.credits.balance(team_id)
    usage = await services.credits.usage(team_id, since=since, top=10)
    feedback = await services.feedback.counts(team_id, since=since)
    buttons, note = top_up_offer(services)
    blocks = home_blocks(
        balance,
        usage,
        month=since.strftime("%B %Y"),
        price=services.pricing.describe(),
        top_up=buttons,
        top_up_note=note,
        feedback=feedback,
        notice=notice,
    )
    if admin:  # before the how-to: the limits and the answers' settings an admin manages here
        blocks[-2:-2] = home_limit_blocks(await services.credits.limits(team_id)) + home_settings_blocks(
            await overview_text(services, team_id)
        )
    return {"type": "home", "blocks": blocks}


async def publish_home(
    services: Services, client: AsyncWebClient, team_id: str, user_id: str, *, notice: list[dict] | None = None
) -> None:
    view = await home_view(services, team_id, notice=notice, admin=await is_admin(client, user_id))
    await services.slack.for_team(team_id).call(client, "views.publish", user_id=user_id, view=view)
