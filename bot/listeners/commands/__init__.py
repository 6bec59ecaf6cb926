import asyncio
import logging

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.admins import is_admin
from bot.surfaces.answer_settings import claude_command
from bot.surfaces.auto_reload import autoreload_command
from bot.surfaces.credits_view import credits_blocks, credits_summary_text
from bot.surfaces.limits import limit_command, list_command
from bot.surfaces.top_up import checkout_message, no_such_pack, pack_size, top_up_offer
from bot.surfaces.usage_report import ADMINS_ONLY, EXPORT_USAGE, export_period, send_export, usage_command

log = logging.getLogger(__name__)

# Slack wants the acknowledgement within 3 seconds, and the balance travels in it.
REPLY_DEADLINE = 2.0
USAGE = (
    "Use `/credits` to see this workspace's credits, or `/credits buy 500` to buy a pack. "
    "Admins: `/credits usage`, `/credits export`, `/credits limit`, `/credits limits` and `/credits autoreload`."
)


def register(app: AsyncApp) -> None:
    app.command("/credits")(on_credits)
    app.command("/claude")(on_claude)


async def on_claude(ack: AsyncAck, command: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, command)
    work = claude_command(
        services, context.client, team_id, command.get("user_id") or "", command.get("text", "").split()
    )
    await ack(**await _admin_reply(work, team_id, "/claude"))


async def on_credits(ack: AsyncAck, respond: AsyncRespond, command: dict, context: AsyncBoltContext) -> None:
    services: Services = context["services"]
    team_id = workspace_id(context.team_id, command)
    words = command.get("text", "").split()
    if words and words[0].lower() == "buy":
        await _buy(ack, respond, command, context, services, team_id, words[1:])
    elif words and words[0].lower() in ("limit", "limits"):
        await ack(**await _limits(services, context, team_id, command.get("user_id"), words))
    elif words and words[0].lower() in ("autoreload", "auto-reload"):
        work = autoreload_command(services, context.client, team_id, command.get("user_id") or "", words[1:])
        await ack(**await _admin_reply(work, team_id, "autoreload"))
    elif words and words[0].lower() == "usage":
        await ack(
            **await _admin_reply(
                usage_command(services, context.client, team_id, command.get("user_id") or ""), team_id, "usage"
            )
        )
    elif words and words[0].lower() == "export":
        await ack(**await _export(services, context, team_id, command.get("user_id"), words[1:]))
    elif words and words[0].lower() != "help":
        await ack(response_type="ephemeral", text=f"I don't know `{words[0]}`. {USAGE}")
    else:
        await ack(**await _overview(services, team_id))


async def _overview(services: Services, team_id: str) -> dict:
    try:
        balance, usage = await asyncio.wait_for(
            asyncio.gather(services.credits.balance(team_id), services.credits.usage(team_id, days=30)),
            REPLY_DEADLINE,
        )
    except Exception:
        log.exception("/credits could not read the balance of %s", team_id)
        return {
            "response_type": "ephemeral",
            "text": "I couldn't read this workspace's credits just now. Please try again in a minute.",
        }
    buttons, note = top_up_offer(services)
    blocks = credits_blocks(balance, usage, services.pricing.describe(), top_up=buttons, top_up_note=note)
    return {"response_type": "ephemeral", "text": credits_summary_text(balance), "blocks": blocks}


async def _admin_reply(work, team_id: str, what: str) -> dict:
    try:
        text = await asyncio.wait_for(work, REPLY_DEADLINE)
    except Exception:
        log.exception("/credits %s failed in team %s", what, team_id)
        text = "I couldn't do that just now. Please try again in a minute."
    return {"response_type": "ephemeral", "text": text}


async def _export(
    services: Services, context: AsyncBoltContext, team_id: str, user_id: str | None, args: list[str]
) -> dict:
    period = export_period(args, services.clock())
    if period is None:
        return {"response_type": "ephemeral", "text": f"I didn't understand the dates. {EXPORT_USAGE}"}
    if not user_id:
        return {"response_type": "ephemeral", "text": ADMINS_ONLY}
    try:
        admin = await asyncio.wait_for(is_admin(context.client, user_id), REPLY_DEADLINE)
    except TimeoutError:
        admin = False
    if not admin:
        return {"response_type": "ephemeral", "text": ADMINS_ONLY}
    services.tasks.spawn(send_export(services, context.client, team_id, user_id, *period), name=f"export {team_id}")
    return {"response_type": "ephemeral", "text": "I'm sending you the CSV in a direct message."}


async def _limits(
    services: Services, context: AsyncBoltContext, team_id: str, user_id: str | None, words: list[str]
) -> dict:
    if not user_id:
        return {"response_type": "ephemeral", "text": "I couldn't tell who asked. Please try again."}
    if words[0].lower() == "limits":
        work = list_command(services, context.client, team_id, user_id)
    else:
        work = limit_command(services, context.client, team_id, user_id, words[1:])
    return await _admin_reply(work, team_id, words[0])


async def _buy(ack, respond, command, context, services: Services, team_id: str, args: list[str]) -> None:
    if not args:
        await ack(response_type="ephemeral", text=f"Which pack? {USAGE}")
        return
    credits = pack_size(args[0]) if len(args) == 1 else None
    if credits is None:
        await ack(no_such_pack(services, " ".join(args)))
        return
    user_id = command.get("user_id")
    if not user_id or not command.get("response_url"):
        await ack(response_type="ephemeral", text="I couldn't tell who asked. Please try again.")
        return
    await ack(response_type="ephemeral", text="Opening a checkout page…")
    message = await checkout_message(
        services,
        context.client,
        team_id=team_id,
        user_id=user_id,
        credits=credits,
        request_key=f"command:{command.get('trigger_id')}",
    )
    try:
        await respond(**message)
    except Exception as error:
        log.warning(
            "could not send the checkout link to %s in team %s (%s)", user_id, team_id, error.__class__.__name__
        )
