"""`/credits usage` and `/credits export` (admins): this month by person and by channel, and every answer of a
period as a CSV file shared in the admin's DM (the same CSV as `python -m billing export`)."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time

from slack_sdk.web.async_client import AsyncWebClient

from billing import UsageBreakdown
from bot.services import Services
from bot.surfaces.admins import is_admin

log = logging.getLogger(__name__)

ADMINS_ONLY = "Only workspace admins and owners can see usage by person and export it."
EXPORT_USAGE = (
    "Use `/credits export` for this month, or `/credits export 2026-11-01 2026-12-01` for a period (UTC, end excluded)."
)
MOST_LISTED = 15


def _where(channel_id: str | None) -> str:
    if not channel_id:
        return "unknown"
    return "direct messages" if channel_id.startswith("D") else f"<#{channel_id}>"


def breakdown_text(usage: UsageBreakdown) -> str:
    lines = [
        f"*Usage this month* (since {usage.since:%b %-d}, UTC): {usage.total:,} credits over {usage.answers:,} answers"
    ]
    if usage.by_user:
        people = ", ".join(
            f"<@{user}> {credits:,} ({answers:,})" if user else f"unknown {credits:,} ({answers:,})"
            for user, credits, answers in usage.by_user[:MOST_LISTED]
        )
        lines.append(f"*By person* (credits, answers): {people}")
    if usage.by_channel:
        channels = ", ".join(
            f"{_where(channel)} {credits:,} ({answers:,})"
            for channel, credits, answers in usage.by_channel[:MOST_LISTED]
        )
        lines.append(f"*By channel:* {channels}")
    return "\n".join(lines)


async def usage_command(services: Services, client: AsyncWebClient, team_id: str, user_id: str) -> str:
    if not await is_admin(client, user_id):
        return ADMINS_ONLY
    return breakdown_text(await services.credits.month_usage(team_id))


def export_period(args: list[str], now: datetime) -> tuple[datetime, datetime | None] | None:
    """[since [until]] as UTC days; this month when none. None when they are not dates in order."""
    try:
        days = [date.fromisoformat(arg) for arg in args]
    except ValueError:
        return None
    if len(days) > 2 or (len(days) == 2 and days[1] <= days[0]):
        return None
    if not days:
        return datetime(now.year, now.month, 1, tzinfo=UTC), None
    since = datetime.combine(days[0], time(), UTC)
    return since, datetime.combine(days[1], time(), UTC) if len(days) == 2 else None


async def send_export(
    services: Services, client: AsyncWebClient, team_id: str, user_id: str, since: datetime, until: datetime | None
) -> None:
    """Share the period's CSV in the admin's DM; on failure, say so there (or at least in the log)."""
    exported = await services.credits.answers_csv(team_id, since=since, until=until)
    period = f"{since:%Y-%m-%d}_{until:%Y-%m-%d}" if until else f"{since:%Y-%m-%d}"
    answers = exported.count("\n") - 1
    scheduler = services.slack.for_team(team_id)
    try:
        await scheduler.upload_to_dm(
            client,
            user_id,
            filename=f"claude-usage-{team_id}-{period}.csv",
            content=exported,
            title=f"Claude usage from {since:%Y-%m-%d}" + (f" to {until:%Y-%m-%d}" if until else ""),
            comment=f"Every answer from {since:%b %-d, %Y}"
            + (f" until {until:%b %-d, %Y}" if until else "")
            + f" (UTC): {answers:,} answers.",
        )
    except Exception as error:
        log.warning("could not share the usage export of %s with %s (%s)", team_id, user_id, error.__class__.__name__)
        try:
            await scheduler.direct_message(
                client, user_id, text="I couldn't upload the usage export. Please try again later."
            )
        except Exception:
            log.warning("could not tell %s in %s that the export failed", user_id, team_id)
