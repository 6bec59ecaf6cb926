"""What a failed Slack call means: rate limited (wait and send again), not done at all (safe to send again),
maybe done (a post or an append sent again could show twice), or refused for good."""

from __future__ import annotations

import asyncio

import aiohttp
from slack_sdk.errors import SlackApiError

# Slack answered that it did nothing: sending again cannot do anything twice.
NOT_DONE_ERRORS = {"service_unavailable", "request_timeout", "ratelimited"}
# Slack failed on its side, and "it's possible some aspect of the operation succeeded" (internal_error).
MAYBE_DONE_ERRORS = {"internal_error", "fatal_error"}
# The request never reached Slack (no connection was made).
NOT_SENT = (aiohttp.ClientConnectorError,)
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def slack_error(error: SlackApiError) -> str:
    """Slack's error code ("message_not_found", …); a body that is not JSON (a proxy's error page) has none."""
    data = error.response.data
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) else f"http_{error.response.status_code}"


def retry_after_seconds(error: SlackApiError) -> float | None:
    """Slack's Retry-After for a rate-limited call, None for any other error."""
    response = error.response
    if response.status_code != 429 and slack_error(error) != "ratelimited":
        return None
    headers = {k.lower(): v for k, v in (response.headers or {}).items()}
    value = headers.get("retry-after", "1")
    try:
        return max(float(value[0] if isinstance(value, list) else value), 0.5)
    except ValueError:
        return 1.0


def is_transient_slack_error(error: SlackApiError) -> bool:
    """Slack failed on its side: trying again later may work (whether the first try did something or not)."""
    return error.response.status_code >= 500 or slack_error(error) in NOT_DONE_ERRORS | MAYBE_DONE_ERRORS


def surely_not_done(error: BaseException) -> bool:
    """Whether the failed call certainly did nothing, so that even a post may be sent again: Slack said so,
    an edge proxy answered instead of Slack (its error page is not Slack's JSON), or no connection was made."""
    if isinstance(error, SlackApiError):
        code = slack_error(error)
        return code in NOT_DONE_ERRORS or (code.startswith("http_5") and not isinstance(error.response.data, dict))
    return isinstance(error, NOT_SENT)
