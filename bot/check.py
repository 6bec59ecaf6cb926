"""`python -m bot check`: the start-up checks and every credential, without serving: a table, exit 0 or 1.

Nothing is changed anywhere: the schema is compared, not migrated; Anthropic is asked to count tokens (free);
Stripe is asked for the account's balance.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import anthropic
import stripe
from slack_sdk.errors import SlackApiError

from billing import WEBHOOK_PATH, build_stripe_client, stripe_off_reason
from bot.installs import BOT_SCOPES
from bot.services import open_slack_http, slack_web_client
from bot.startup import SLACK_TIMEOUT, StartupError, failure_reason, reach_database, read_settings
from config import Settings
from storage import database_missing, describe_database, schema_revisions

OK, PROBLEM, OFF = "ok", "problem", "off"
CALL_TIMEOUT = 15.0


@dataclass
class Finding:
    check: str
    status: str  # OK, PROBLEM or OFF (not configured, which is allowed)
    detail: str


async def check_database(settings: Settings) -> Finding:
    where = describe_database(settings.database_url)
    if settings.database_url.startswith("sqlite") and await database_missing(settings.database_url):
        return Finding("database", OK, f"{where} does not exist yet (the bot creates it at start)")
    try:
        engine = await reach_database(settings, upgrade=False)
    except StartupError as error:
        return Finding("database", PROBLEM, error.problems[0])
    try:
        current, newest = await schema_revisions(engine)
    finally:
        await engine.dispose()
    if current is None:
        return Finding("database", OK, f"{where}: reachable, no schema yet (the bot creates it at start)")
    if current != newest:
        return Finding("database", OK, f"{where}: schema at {current}, the bot brings it to {newest} at start")
    return Finding("database", OK, f"{where}: schema up to date ({current})")


async def check_slack(settings: Settings) -> Finding:
    if settings.oauth_enabled:
        return Finding("slack", OK, "OAuth mode: each workspace's token comes with its install (/slack/install)")
    async with open_slack_http() as http:
        try:
            async with asyncio.timeout(SLACK_TIMEOUT):
                identity = await slack_web_client(settings, http, settings.slack_bot_token).auth_test()
        except SlackApiError as error:
            return Finding("slack", PROBLEM, f"SLACK_BOT_TOKEN refused by Slack: {error.response.get('error')}")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return Finding("slack", PROBLEM, f"Slack unreachable at {settings.slack_api_url}: {failure_reason(error)}")
    granted = {scope.strip() for scope in (identity.headers.get("x-oauth-scopes") or "").split(",") if scope.strip()}
    who = f"workspace {identity.get('team_id')} ({identity.get('team')}) as {identity.get('user_id')}"
    missing = [scope for scope in BOT_SCOPES if scope not in granted]
    if missing:
        return Finding(
            "slack", PROBLEM, f"{who}: the token lacks {', '.join(missing)}; reinstall the app from manifest.yml"
        )
    return Finding("slack", OK, f"{who}, with every scope manifest.yml asks for")


async def check_anthropic(settings: Settings) -> Finding:
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url, max_retries=0, timeout=CALL_TIMEOUT
    )
    try:
        counted = await client.messages.count_tokens(
            model=settings.claude_model, messages=[{"role": "user", "content": "ping"}]
        )
    except anthropic.AuthenticationError as error:
        return Finding("anthropic", PROBLEM, f"ANTHROPIC_API_KEY refused ({_anthropic_reason(error)})")
    except anthropic.NotFoundError as error:
        return Finding(
            "anthropic",
            PROBLEM,
            f"CLAUDE_MODEL {settings.claude_model} unknown to the API ({_anthropic_reason(error)})",
        )
    except anthropic.APIStatusError as error:
        return Finding("anthropic", PROBLEM, f"the API answered {_anthropic_reason(error)}")
    except anthropic.APIConnectionError as error:
        return Finding(
            "anthropic",
            PROBLEM,
            f"Anthropic unreachable at {client.base_url}: {failure_reason(error.__cause__ or error)}",
        )
    finally:
        await client.close()
    return Finding("anthropic", OK, f"key accepted; {settings.claude_model} counted {counted.input_tokens} tokens")


def _anthropic_reason(error: anthropic.APIStatusError) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    kind = (body.get("error") or {}).get("type") if isinstance(body.get("error"), dict) else None
    return f"{error.status_code} {kind or ''}, request {error.request_id}".replace("  ", " ")


async def check_stripe(settings: Settings) -> Finding:
    reason = stripe_off_reason(settings)
    if reason == "not configured":
        return Finding("stripe", OFF, "top-ups off: STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and PUBLIC_URL not set")
    if reason is not None:
        return Finding("stripe", PROBLEM, f"top-ups off: {reason}")
    async with aiohttp.ClientSession() as http:
        client = build_stripe_client(settings, http)
        try:
            balance = await client.v1.balance.retrieve_async()
        except stripe.AuthenticationError as error:
            return Finding("stripe", PROBLEM, f"STRIPE_SECRET_KEY refused: {error.user_message or error}")
        except stripe.PermissionError:
            return Finding("stripe", OK, "key accepted (a restricted key: it may not read the balance)")
        except stripe.StripeError as error:
            return Finding("stripe", PROBLEM, f"Stripe answered {error.http_status}: {error.user_message or error}")
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            return Finding(
                "stripe", PROBLEM, f"Stripe unreachable at {settings.stripe_api_base}: {failure_reason(error)}"
            )
    mode = "live" if balance.livemode else "test"
    return Finding("stripe", OK, f"key accepted ({mode} mode); webhooks at {settings.public_url}{WEBHOOK_PATH}")


# Each check, and the settings whose problems make it pointless (it would only repeat them).
CHECKS = (
    (check_database, ("DATABASE_URL",)),
    (check_slack, ("SLACK_",)),
    (check_anthropic, ("ANTHROPIC_", "CLAUDE_MODEL")),
    (check_stripe, ("STRIPE_", "PUBLIC_URL", "CREDIT_PACKS")),
)


async def run_checks() -> list[Finding]:
    problems: list[str] = []
    try:
        settings = read_settings(Settings)
        findings = [Finding("settings", OK, "every setting is valid")]
    except StartupError as error:
        problems = [problem.removeprefix("configuration error: ") for problem in error.problems]
        findings = [Finding("settings", PROBLEM, problem) for problem in problems]
        if not isinstance(error.settings, Settings):
            return findings  # without the credentials there is nothing more to try
        settings = error.settings
    runnable = [check for check, names in CHECKS if not any(problem.startswith(names) for problem in problems)]
    findings += await asyncio.gather(*(check(settings) for check in runnable))
    return findings


def table(findings: list[Finding]) -> str:
    width = max(len(finding.check) for finding in findings)
    lines = [f"{'check'.ljust(width)}  {'status'.ljust(7)}  detail"]
    lines += [f"{finding.check.ljust(width)}  {finding.status.ljust(7)}  {finding.detail}" for finding in findings]
    return "\n".join(lines)


def check() -> int:
    findings = asyncio.run(run_checks())
    print(table(findings))
    return 1 if any(finding.status == PROBLEM for finding in findings) else 0
