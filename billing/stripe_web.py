"""HTTP endpoints for Stripe: the webhook, and the pages Checkout sends the buyer back to.

The success page grants nothing: anyone can open /billing/success?session_id=..., so only a verified
webhook moves credits. The pages just say what happens next.
"""

from __future__ import annotations

import html

from aiohttp import web

from billing.stripe_checkout import CANCEL_PATH, SUCCESS_PATH
from billing.stripe_webhook import StripeWebhook

WEBHOOK_PATH = "/stripe/webhook"
MAX_WEBHOOK_BYTES = 1024 * 1024  # Stripe events are a few kB; refuse to buffer anything huge

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
  body {{ font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", sans-serif; max-width: 34rem;
         margin: 4rem auto; padding: 0 1.25rem; line-height: 1.5; color: #1d1c1d; }}
  h1 {{ font-size: 1.5rem; }}
  p {{ color: #454245; }}
</style>
</head>
<body>
<h1>{title}</h1>
{paragraphs}
</body>
</html>
"""


def _page(title: str, *paragraphs: str) -> web.Response:
    body = _PAGE.format(
        title=html.escape(title), paragraphs="\n".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    )
    # Nothing personal is shown, but the URL carries a session id: keep it out of caches and referrers.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)


def stripe_routes(webhook: StripeWebhook | None) -> list[web.RouteDef]:
    """Routes to add to the bot's aiohttp app. `webhook` is None when Stripe is not configured."""

    async def receive_webhook(request: web.Request) -> web.Response:
        if webhook is None:
            return web.Response(status=503, text="Stripe payments are not configured on this server.")
        if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
            return web.Response(status=413, text="payload too large")
        # The signature covers the exact bytes Stripe sent: read them raw, never re-serialized JSON.
        try:
            payload = await request.read()
        except (ConnectionError, web.HTTPException):
            return web.Response(status=400, text="incomplete body")
        status, text = await webhook.handle(payload, request.headers.get("Stripe-Signature"))
        return web.Response(status=status, text=text)

    async def success_page(_request: web.Request) -> web.Response:
        return _page(
            "Thanks, your payment is being processed",
            "Your credits are added as soon as Stripe confirms the payment, usually within a minute "
            "(some payment methods take a few days).",
            "You'll get a direct message in Slack when they arrive. You can close this tab and go back to Slack.",
        )

    async def cancel_page(_request: web.Request) -> web.Response:
        return _page(
            "Checkout cancelled",
            "Nothing was charged and no credits were added.",
            "You can close this tab. To buy credits later, use the buy button in Slack again.",
        )

    return [
        web.post(WEBHOOK_PATH, receive_webhook),
        web.get(SUCCESS_PATH, success_page),
        web.get(CANCEL_PATH, cancel_page),
    ]
