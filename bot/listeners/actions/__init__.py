import re

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot.services import Services
from bot.top_up import BUY_ACTION_PREFIX, checkout_message


def register(app: AsyncApp) -> None:
    app.action(re.compile(rf"^{BUY_ACTION_PREFIX}_\d+$"))(on_buy)
    app.action("open_checkout")(on_open_checkout)


async def on_buy(ack: AsyncAck, respond: AsyncRespond, body: dict, action: dict, context: AsyncBoltContext) -> None:
    await ack()
    services: Services = context["services"]
    container = body.get("container", {})
    # Presses of the same button in the same message are one purchase: a double click opens one session.
    pressed_in = container.get("message_ts") or body.get("trigger_id")
    message = await checkout_message(
        services,
        context.client,
        team_id=context.team_id or body.get("team", {}).get("id", ""),
        user_id=body["user"]["id"],
        credits=int(action["value"]),
        request_key=f"button:{pressed_in}:{action['value']}",
    )
    await respond(**message)


async def on_open_checkout(ack: AsyncAck) -> None:
    # A link button still sends an action; Slack wants it acknowledged.
    await ack()
