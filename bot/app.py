"""The Bolt app: request verification, per-workspace clients, and the listeners."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners import register_listeners
from bot.services import Services

log = logging.getLogger(__name__)


def build_bolt_app(services: Services) -> AsyncApp:
    settings = services.settings
    app = AsyncApp(
        signing_secret=settings.slack_signing_secret,
        # Bolt hands every listener a client built from this one, so SLACK_API_URL reaches them all.
        client=AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url),
        process_before_response=False,
    )

    @app.middleware
    async def provide_services(context, next):
        context["services"] = services
        await next()

    @app.error
    async def log_listener_error(error, body):
        log.error("a Slack listener failed on %s", body.get("event_id") or body.get("type"), exc_info=error)

    register_listeners(app)
    return app
