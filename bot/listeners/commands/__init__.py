import asyncio
import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.credits_view import credits_blocks, credits_summary_text
from bot.services import Services

log = logging.getLogger(__name__)

# Slack wants the acknowledgement within 3 seconds; the answer itself must fit in that too.
REPLY_DEADLINE = 2.0


def register(app: AsyncApp) -> None:
    app.command("/credits")(on_credits)


async def on_credits(ack: AsyncAck, command: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    team_id = context.team_id or command.get("team_id", "")
    try:
        balance, usage = await asyncio.wait_for(
            asyncio.gather(services.credits.balance(team_id), services.credits.usage(team_id, days=30)),
            REPLY_DEADLINE,
        )
    except Exception:
        log.exception("/credits could not read the balance of %s", team_id)
        await ack(response_type="ephemeral", text="I couldn't read this workspace's credits just now. Please try again in a minute.")
        return
    blocks = credits_blocks(
        balance,
        usage,
        services.pricing.describe(),
        top_up=None,
        top_up_note="Top-ups are not configured on this bot yet; ask the person who runs it to add credits.",
    )
    await ack(response_type="ephemeral", text=credits_summary_text(balance), blocks=blocks)
