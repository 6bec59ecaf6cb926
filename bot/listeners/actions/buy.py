"""The pack buttons of `/credits` and of the Home tab: a Stripe Checkout link for the pack."""

import logging
import re

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.app_home import publish_home
from bot.surfaces.top_up import BUY_ACTION_PREFIX, checkout_message, no_such_pack, pack_size

log = logging.getLogger(__name__)


def register(app: AsyncApp) -> None:
    app.action(re.compile(rf"^{BUY_ACTION_PREFIX}(_|$)"))(on_buy)
    app.action("open_checkout")(on_open_checkout)


async def on_buy(ack: AsyncAck, respond: AsyncRespond, body: dict, action: dict, context: AsyncBoltContext) -> None:
    """A pack button, in a `/credits` message or in the Home tab: the same checkout either way."""
    await ack()
    services: Services = context["services"]
    container = body.get("container") or {}
    in_home = container.get("type") == "view"
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not user_id:
        log.info("a buy button was pressed by nobody in particular; ignored")
        return
    value = action.get("value") or ""
    if in_home:
        # A double click presses the same version of the tab: one purchase.
        view = body.get("view") or {}
        request_key = f"home:{view.get('id')}:{view.get('hash')}:{value}"
    else:
        # Presses of the same button in the same message are one purchase: a double click opens one session.
        pressed_in = container.get("message_ts") or body.get("trigger_id")
        request_key = f"button:{pressed_in}:{value}"
    team_id = workspace_id(context.team_id, body)
    credits = pack_size(value)
    if credits is None:
        message = no_such_pack(services, value)
    else:
        message = await checkout_message(
            services, context.client, team_id=team_id, user_id=user_id, credits=credits, request_key=request_key
        )
    try:
        if in_home:
            # A Home tab has no response_url: the checkout link goes on top of the tab itself.
            notice = message.get("blocks") or [{"type": "section", "text": {"type": "mrkdwn", "text": message["text"]}}]
            await publish_home(services, context.client, team_id, user_id, notice=notice)
        else:
            await respond(**message)
    except Exception as error:
        log.warning("could not show the checkout to %s in team %s (%s)", user_id, team_id, error.__class__.__name__)


async def on_open_checkout(ack: AsyncAck) -> None:
    # A link button still sends an action; Slack wants it acknowledged.
    await ack()
