"""One answer from Claude: bounded retries before the stream starts, then text deltas as they arrive.

Like the SDK's own `MessageStream`, `ClaudeStream` accumulates state as events pass (text, usage,
stop reason, request id) so that whoever stops reading early — a deleted reply, a fault — still
knows exactly what was consumed. Faults come out as one `ClaudeError` with a kind the bot can
explain to a user, never as the SDK's or the transport's exception.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum

import anthropic
import httpx2

from billing import TokenUsage
from bot.logs import annotate

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
CHARS_PER_TOKEN = 4


class Failure(Enum):
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    MISCONFIGURED = "misconfigured"
    INTERRUPTED = "interrupted"


class ClaudeError(Exception):
    def __init__(self, failure: Failure, *, request_id: str | None, detail: str):
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.request_id = request_id
        self.detail = detail


def estimate_tokens(text: str) -> int:
    """A rough token count for text Claude has not measured (about four characters a token)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _failure_for_status(status: int) -> Failure:
    if status == 429:
        return Failure.RATE_LIMITED
    if status == 529:
        return Failure.OVERLOADED
    if status >= 500 or status in (408, 409):
        return Failure.UNAVAILABLE
    if status in (401, 402, 403, 404):
        return Failure.MISCONFIGURED
    return Failure.REJECTED


def _retry_after(error: anthropic.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class ClaudeStream:
    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        request: dict,
        *,
        max_retries: int,
        retry_max_wait: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._client = client
        self._request = request
        self._max_retries = max_retries
        self._retry_max_wait = retry_max_wait
        self._sleep = sleep
        self._parts: list[str] = []
        self._input = TokenUsage()
        self._reported_output = 0
        self.stop_reason: str | None = None
        self.request_id: str | None = None
        self.completed = False
        self._started = False
        self._searches = 0
        self._searches_started = 0
        self.sources: dict[str, str] = {}  # the web pages the answer cites: url -> title, in order of citation

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def usage(self) -> TokenUsage:
        """What was consumed so far; output is estimated from the text when Claude never reported it."""
        output = self._reported_output
        if not self.completed:
            output = max(output, estimate_tokens(self.text))
        return TokenUsage(
            input_tokens=self._input.input_tokens,
            cache_creation_input_tokens=self._input.cache_creation_input_tokens,
            cache_read_input_tokens=self._input.cache_read_input_tokens,
            output_tokens=output,
            # Cut short, the searches Claude started are what is known of them (the count comes at the end).
            web_search_requests=self._searches if self.completed else max(self._searches, self._searches_started),
        )

    async def deltas(self) -> AsyncIterator[str]:
        """Claude's text as it is written. Raises ClaudeError; closing the iterator closes the stream."""
        for attempt in range(self._max_retries + 1):
            try:
                # The raw event stream, not `messages.stream()`: this class accumulates what it needs, and
                # the helper's snapshot events cost as much CPU again as the stream itself.
                stream = await self._client.messages.create(**self._request, stream=True)
                async with stream:
                    self.request_id = stream.response.headers.get("request-id")
                    annotate(claude_request_id=self.request_id)
                    async for event in stream:
                        delta = self._record(event)
                        if delta:
                            yield delta
                break
            except anthropic.APIStatusError as error:
                self.request_id = error.request_id or self.request_id
                if error.status_code == 200 or self._started:
                    raise self._interrupted(error) from None
                await self._maybe_retry(attempt, error)
            except (anthropic.APIConnectionError, httpx2.TransportError) as error:
                if self._started:
                    raise self._interrupted(error) from None
                await self._maybe_retry(attempt, error)
        if not self.completed:
            raise ClaudeError(
                Failure.INTERRUPTED, request_id=self.request_id, detail="stream ended without message_stop"
            )

    def _record(self, event) -> str | None:
        if event.type == "message_start":
            self._started = True
            usage = event.message.usage
            self._input = TokenUsage(
                input_tokens=usage.input_tokens or 0,
                cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
                cache_read_input_tokens=usage.cache_read_input_tokens or 0,
            )
            self._reported_output = usage.output_tokens or 0
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            self._parts.append(event.delta.text)
            return event.delta.text
        elif event.type == "content_block_start" and event.content_block.type == "server_tool_use":
            if event.content_block.name == "web_search":
                self._searches_started += 1
        elif event.type == "content_block_delta" and event.delta.type == "citations_delta":
            citation = event.delta.citation
            if citation.type == "web_search_result_location" and citation.url:
                self.sources.setdefault(citation.url, citation.title or citation.url)
        elif event.type == "message_delta":
            self.stop_reason = event.delta.stop_reason
            self._reported_output = event.usage.output_tokens or self._reported_output
            if event.usage.input_tokens is not None:  # final input counts: web search results are read as input
                self._input = TokenUsage(
                    input_tokens=event.usage.input_tokens,
                    cache_creation_input_tokens=event.usage.cache_creation_input_tokens
                    or self._input.cache_creation_input_tokens,
                    cache_read_input_tokens=event.usage.cache_read_input_tokens or self._input.cache_read_input_tokens,
                )
            server_tools = getattr(event.usage, "server_tool_use", None)
            if server_tools is not None and server_tools.web_search_requests:
                self._searches = server_tools.web_search_requests
        elif event.type == "message_stop":
            self.completed = True
        return None

    def _interrupted(self, error: Exception) -> ClaudeError:
        log.warning("Claude stream interrupted (request %s): %s", self.request_id, error.__class__.__name__)
        return ClaudeError(Failure.INTERRUPTED, request_id=self.request_id, detail=error.__class__.__name__)

    async def _maybe_retry(self, attempt: int, error: Exception) -> None:
        """Wait before the next attempt, or raise when retrying would not help or would take too long."""
        if isinstance(error, anthropic.APIStatusError):
            failure = _failure_for_status(error.status_code)
            retryable = error.status_code in RETRYABLE_STATUSES
            wait = _retry_after(error)
            detail = f"HTTP {error.status_code}"
        else:
            failure, retryable, wait, detail = Failure.UNAVAILABLE, True, None, error.__class__.__name__
        if wait is None:
            wait = 0.5 * 2**attempt
        # The SDK would sleep for any Retry-After, even an hour; an answer someone waits for must not.
        if not retryable or attempt >= self._max_retries or wait > self._retry_max_wait:
            log.warning("Claude request failed (%s, request %s); not retrying", detail, self.request_id)
            raise ClaudeError(failure, request_id=self.request_id, detail=detail) from None
        log.info(
            "Claude request failed (%s, request %s); retry %d in %.1fs", detail, self.request_id, attempt + 1, wait
        )
        await self._sleep(wait)
