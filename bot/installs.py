"""Installs in many workspaces (OAuth mode): where the tokens are kept, how the OAuth flow and Bolt's
authorization use them, how work that no Slack request started finds a workspace's token, and what a
workspace's leaving removes.

Installations and OAuth state live in the bot's own database through slack_sdk's SQLAlchemy stores
(tables created by migration 0003). Every Web API call of the flow — `oauth.v2.access`, `auth.test`,
token refresh — goes to SLACK_API_URL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_callback_options import AsyncCallbackOptions, AsyncFailureArgs, AsyncSuccessArgs
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.sqlalchemy_utils import normalize_datetime_for_db
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.installation_cache import CachedInstallationStore
from bot.tables import slack_org_workspaces as org_workspaces
from config import Settings

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# Keep in step with manifest.yml.
BOT_SCOPES = [
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "groups:history",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "im:history",
    "im:read",
    "im:write",
    "mpim:history",
    "users:read",
]
STATE_TTL_SECONDS = 600
# With token rotation on, a bot token lives 12 hours; refresh it when less than this is left.
REFRESH_MINUTES_BEFORE_EXPIRY = 120

OnInstalled = Callable[[Installation], Awaitable[None]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OneTimeStateStore(AsyncSQLAlchemyOAuthStateStore):
    """slack_sdk's state store, except that a state is consumed by a single DELETE: the stock one selects
    and then deletes, so two callbacks racing with the same state could both pass."""

    async def async_consume(self, state: str) -> bool:
        c = self.oauth_states.c
        now = normalize_datetime_for_db(_utc_now())
        async with self.engine.begin() as connection:
            deleted = await connection.execute(
                self.oauth_states.delete().where(c.state == state).returning(c.expire_at)
            )
            return any(expire_at > now for (expire_at,) in deleted.all())

    async def purge_expired(self) -> int:
        now = normalize_datetime_for_db(_utc_now())
        async with self.engine.begin() as connection:
            result = await connection.execute(self.oauth_states.delete().where(self.oauth_states.c.expire_at <= now))
        return result.rowcount


class Installs:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        client: AsyncWebClient,
        *,
        reader: AsyncEngine | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ):
        self.client_id = settings.slack_client_id
        self.client_secret = settings.slack_client_secret
        self.client = client  # tokenless: OAuth exchanges and token refreshes
        self.store = CachedInstallationStore(
            client_id=self.client_id,
            engine=engine,
            logger=log,
            reader=reader,
            refresh_minutes=REFRESH_MINUTES_BEFORE_EXPIRY,
        )
        self.states = OneTimeStateStore(expiration_seconds=STATE_TTL_SECONDS, engine=engine, logger=log)
        self._engine = engine
        self._clock = clock
        assert self.client_id and self.client_secret  # OAuth mode (settings.oauth_enabled) has both
        self._rotator = AsyncTokenRotator(
            client_id=self.client_id, client_secret=self.client_secret, client=self.client
        )
        self._known_org_workspaces: set[tuple[str, str]] = set()
        # GovSlack and the test fake serve the authorize page next to their Web API.
        self._authorization_url = settings.slack_api_url.removesuffix("api/") + "oauth/v2/authorize"
        self._redirect_uri = f"{settings.public_url.rstrip('/')}{REDIRECT_PATH}" if settings.public_url else None

    # --- wiring into Bolt ------------------------------------------------------------------------

    def oauth_flow(self, on_installed: OnInstalled) -> AsyncOAuthFlow:
        async def success(args: AsyncSuccessArgs) -> BoltResponse:
            try:
                await on_installed(args.installation)
            except Exception:
                log.exception("welcoming the install of team %s failed", args.installation.team_id)
            return await args.default.success(args)

        async def failure(args: AsyncFailureArgs) -> BoltResponse:
            log.warning("an install did not complete: %s", args.reason)
            return await args.default.failure(args)

        settings = AsyncOAuthSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scopes=BOT_SCOPES,
            user_scopes=[],
            redirect_uri=self._redirect_uri,
            install_path=INSTALL_PATH,
            redirect_uri_path=REDIRECT_PATH,
            authorization_url=self._authorization_url,
            installation_store=self.store,
            installation_store_bot_only=True,
            state_store=self.states,
            state_expiration_seconds=STATE_TTL_SECONDS,
            token_rotation_expiration_minutes=REFRESH_MINUTES_BEFORE_EXPIRY,
            callback_options=AsyncCallbackOptions(success=success, failure=failure),
            logger=log,
        )
        return AsyncOAuthFlow(client=self.client, logger=log, settings=settings)

    def authorize(self) -> AsyncInstallationStoreAuthorize:
        """Finds the token of the workspace (or org) a request comes from; refreshes rotating tokens.

        Bot tokens only: the app asks for no user scopes. auth.test answers are cached per token: an
        uninstalled workspace is refused anyway, because its token is no longer in the store."""
        return AsyncInstallationStoreAuthorize(
            logger=log,
            installation_store=self.store,
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_rotation_expiration_minutes=REFRESH_MINUTES_BEFORE_EXPIRY,
            bot_only=True,
            cache_enabled=True,
            client=self.client,
        )

    # --- tokens for work no Slack request started -----------------------------------------------

    async def bot_token_for_team(self, team_id: str) -> str | None:
        bot = await self._find_bot(team_id)
        if bot is None:
            return None
        if bot.bot_refresh_token:
            refreshed = await self._rotator.perform_bot_token_rotation(
                bot=bot, minutes_before_expiration=REFRESH_MINUTES_BEFORE_EXPIRY
            )
            if refreshed is not None:
                await self.store.async_save_bot(refreshed)
                bot = refreshed
        return bot.bot_token

    async def _find_bot(self, team_id: str) -> Bot | None:
        """The workspace's own install (any org), else the org-wide install of the org it belongs to."""
        bots = self.store.bots.c
        async with self._engine.connect() as connection:
            own = (
                await connection.execute(
                    sa.select(bots.enterprise_id)
                    .where(bots.client_id == self.client_id, bots.team_id == team_id, bots.bot_token.is_not(None))
                    .order_by(bots.installed_at.desc())
                    .limit(1)
                )
            ).first()
            org = None
            if own is None:
                org = (
                    await connection.execute(
                        sa.select(org_workspaces.c.enterprise_id).where(org_workspaces.c.team_id == team_id)
                    )
                ).scalar()
        if own is not None:
            return await self.store.async_find_bot(enterprise_id=own.enterprise_id, team_id=team_id)
        if org is not None:
            return await self.store.async_find_bot(enterprise_id=org, team_id=None, is_enterprise_install=True)
        return None

    async def remember_org_workspace(self, team_id: str, enterprise_id: str) -> None:
        """A request came from `team_id` through the org-wide install of `enterprise_id`."""
        if not team_id or not enterprise_id or (team_id, enterprise_id) in self._known_org_workspaces:
            return
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(org_workspaces)
            .values(team_id=team_id, enterprise_id=enterprise_id, seen_at=self._clock())
            .on_conflict_do_update(index_elements=["team_id"], set_={"enterprise_id": enterprise_id})
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)
        self._known_org_workspaces.add((team_id, enterprise_id))

    # --- leaving ---------------------------------------------------------------------------------

    async def forget(self, *, enterprise_id: str | None, team_id: str | None, org_wide: bool) -> list[str]:
        """Delete the installation (bot and installer rows); return the workspaces whose data goes with it."""
        if not org_wide:
            await self.store.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)
            return [team_id] if team_id else []
        await self.store.async_delete_all(enterprise_id=enterprise_id, team_id=None)
        c = org_workspaces.c
        async with self._engine.begin() as connection:
            teams = (
                (await connection.execute(sa.select(c.team_id).where(c.enterprise_id == enterprise_id))).scalars().all()
            )
            await connection.execute(sa.delete(org_workspaces).where(c.enterprise_id == enterprise_id))
        self._known_org_workspaces = {known for known in self._known_org_workspaces if known[1] != enterprise_id}
        return list(teams)

    async def forget_user_tokens(self, *, enterprise_id: str | None, team_id: str | None, user_ids: list[str]) -> None:
        for user_id in user_ids:
            await self.store.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id)
