"""The Bolt app: request verification, per-workspace clients, and the listeners.

Single-workspace mode (SLACK_BOT_TOKEN): every request uses that token. OAuth mode (SLACK_CLIENT_ID and
SLACK_CLIENT_SECRET, no SLACK_BOT_TOKEN): Bolt's OAuth flow installs the app in any workspace and each
request is authorized with the token of the workspace (or Enterprise Grid org) it comes from; a request
from a workspace without an installation is refused before any listener runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from bot.listeners import register_listeners
from bot.question import workspace_id
from bot.services import Services
from bot.surfaces.welcome import welcome_installer

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = {"app_uninstalled", "tokens_revoked"}


def build_bolt_app(services: Services) -> AsyncApp:
    settings = services.settings
    installs = services.installs
    # Bolt hands every listener a client built from this one, so SLACK_API_URL reaches them all.
    client = services.slack_web_client(None if installs else settings.slack_bot_token)
    oauth: dict[str, Any] = {}
    if installs is not None:
        oauth = {
            "oauth_flow": installs.oauth_flow(lambda installation: welcome_installer(services, installation)),
            "authorize": installs.authorize(),
        }
    with _without_bolt_environment():
        # Requests are verified before Bolt sees them (bot/inbound.py), on the very bytes Slack signed.
        app = AsyncApp(
            signing_secret=settings.slack_signing_secret,
            client=client,
            process_before_response=False,
            request_verification_enabled=False,
            **oauth,
        )

    strangers = OtherWorkspaces()

    @app.middleware
    async def provide_services(context, body, next):
        if installs is None and strangers.refuse(context, body):
            return BoltResponse(status=200, body="")  # acknowledged, so that Slack does not retry; nothing else
        context["services"] = services
        if installs is not None and context.is_enterprise_install and _event_type(body) not in LIFECYCLE_EVENTS:
            await installs.remember_org_workspace(workspace_id(None, body), context.enterprise_id)
        await next()

    @app.error
    async def log_listener_error(error, body):
        log.error("a Slack listener failed on %s", body.get("event_id") or body.get("type"), exc_info=error)

    register_listeners(app)
    return app


class OtherWorkspaces:
    """Single-workspace mode serves the token's workspace only. The app may be installed elsewhere too (or a
    request may come from a workspace the token does not belong to): those are ignored, logged once per team,
    and open no account: answering them would charge the wrong credits and post with the wrong token."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    def refuse(self, context, body: dict) -> bool:
        authorized = context.authorize_result.team_id if context.authorize_result else None
        team = workspace_id(context.team_id, body)
        if not authorized or not team or team == authorized:
            return False
        if team not in self._logged:
            self._logged.add(team)
            log.warning("ignoring requests from workspace %s: SLACK_BOT_TOKEN belongs to %s", team, authorized)
        return True


def _event_type(body: dict) -> str | None:
    event = body.get("event")
    return event.get("type") if isinstance(event, dict) else None


@contextlib.contextmanager
def _without_bolt_environment() -> Iterator[None]:
    """Bolt reads settings of its own from the environment: it sets up OAuth (with file stores) whenever
    SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are there, even next to a bot token, and warns at every start that
    SLACK_BOT_TOKEN "will be unused" beside our client. The settings decide: hide these from Bolt."""
    names = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_BOT_TOKEN")
    hidden = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)
