"""A local stand-in for Anthropic's Messages API, reached by the real SDK via `AsyncAnthropic(base_url=...)`.

The SDK is built on `httpx2`, which `respx` cannot intercept, so this is an in-process aiohttp server
speaking the real wire format (SSE events, error bodies, `request-id` headers): the app's client code,
the SDK's parser and its exceptions are all exercised for real. Token counts are deterministic
(`count_input_tokens`, `output_tokens`), so tests can assert exact usage, prompt caching included.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
ERROR_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit",
                  500: "Internal server error", 529: "Overloaded"}
REQUEST_OVERHEAD_TOKENS = 4  # the API counts a few tokens for the prompt's framing, even for "Hi"
MESSAGE_OVERHEAD_TOKENS = 3  # role markers per message
CACHE_LOOKBACK_BLOCKS = 20   # the API checks for hits this many block boundaries back from each breakpoint
MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = {"5m": 300.0, "1h": 3600.0}


@dataclass
class Script:
    """What the next /v1/messages request gets."""

    text: str | None = None  # None: "You said: <last user message>"
    delta_chars: int = 12
    delay: float = 0.0
    first_delay: float | None = None  # None: same as `delay`
    stop_reason: str = "end_turn"
    http_error: int | None = None
    retry_after: int | None = None
    error_after_deltas: int | None = None
    drop_after_deltas: int | None = None
    end_without_stop_after_deltas: int | None = None
    usage: dict | None = None


@dataclass
class Received:
    body: dict
    headers: dict  # lower-cased names
    at: float  # time.monotonic() on arrival
    request_id: str
    path: str = "/v1/messages"
    status: int = 200
    script: Script | None = None
    cancelled: bool = False  # the client went away before the answer was complete
    deltas_sent: int = 0
    usage: dict = field(default_factory=dict)  # what was reported (or, if cancelled, what was generated)
    text: str = ""  # the text streamed so far (whole text for non-streaming)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _random_id(prefix: str, n: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


def _strip_cache_control(block: Any) -> Any:
    # Moving a breakpoint must not change the prefix it marks, so cache_control is not part of it.
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def _blocks(body: dict) -> list[tuple[Any, int, dict | None]]:
    """The prompt in the API's cache order (tools, system, messages): (canonical part, tokens, cache_control)."""
    out: list[tuple[Any, int, dict | None]] = []

    def add(where: Any, block: Any, extra_tokens: int = 0) -> None:
        plain = _strip_cache_control(block)
        if isinstance(plain, str):
            plain = {"type": "text", "text": plain}
        chars = len(plain["text"]) if plain.get("type") == "text" else len(json.dumps(plain, sort_keys=True))
        cc = block.get("cache_control") if isinstance(block, dict) else None
        out.append(([where, plain], _tokens(chars) + extra_tokens, cc))

    for tool in body.get("tools") or []:
        add("tool", tool)
    system = body.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        add("system", block)
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        for j, block in enumerate([content] if isinstance(content, str) else content or []):
            add([i, message.get("role")], block, MESSAGE_OVERHEAD_TOKENS if j == 0 else 0)
    return out


def count_input_tokens(body: dict) -> int:
    """Total input tokens of a request: ceil(chars/4) per block, plus per-message and per-request overhead."""
    return REQUEST_OVERHEAD_TOKENS + sum(tokens for _, tokens, _ in _blocks(body))


def output_tokens(text: str) -> int:
    return max(1, _tokens(len(text)))


def default_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return f"You said: {content}"
            return "You said: " + " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict))
    return "Hello."


def split_deltas(text: str, size: int) -> list[str]:
    """Chunks of about `size` characters, cut after whitespace where possible; they join back to `text`."""
    chunks: list[str] = []
    current = ""
    for word in re.split(r"(?<=\s)(?=\S)", text):
        while len(word) > 2 * size:  # a very long word is cut anyway, like a tokenizer would
            if current:
                chunks.append(current)
                current = ""
            chunks.append(word[:size])
            word = word[size:]
        if current and len(current) + len(word) > size:
            chunks.append(current)
            current = ""
        current += word
    if current:
        chunks.append(current)
    return chunks


def _validate(body: Any, *, counting: bool) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    for name in ("model", "messages") if counting else ("model", "max_tokens", "messages"):
        if name not in body:
            raise ApiError(400, f"{name}: Field required")
    if not counting and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise ApiError(400, f"messages.{i}.content: Field required")
        final_assistant = i == len(messages) - 1 and role == "assistant"
        if message["content"] in ("", []) and not final_assistant:
            raise ApiError(400, f"messages.{i}: all messages must have non-empty content except for the "
                                f"optional final assistant message")
    marked = [cc for _, _, cc in _blocks(body) if cc]
    if len(marked) > MAX_CACHE_BREAKPOINTS:
        raise ApiError(400, f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                            f"Found {len(marked)}.")
    for cc in marked:
        if cc.get("type") != "ephemeral" or cc.get("ttl", "5m") not in CACHE_TTLS:
            raise ApiError(400, "cache_control: Input should be {'type': 'ephemeral', 'ttl': '5m' | '1h'}")


class FakeAnthropic:
    def __init__(self, *, min_cache_tokens: int = 1024, api_key: str | None = None, models: set[str] | None = None):
        self.min_cache_tokens = min_cache_tokens
        self.api_key = api_key  # None: any non-empty key is accepted
        # The models the API serves; None: any. Another model is a 404 not_found_error naming it, as the API answers.
        self.models = models
        self.default = Script()
        self.requests: list[Received] = []
        self.count_requests: list[Received] = []
        self.open_streams = 0
        self.clock: Callable[[], float] = time.monotonic  # cache expiry; replace to simulate time passing
        self._queue: deque[Script] = deque()
        self._cache: dict[str, tuple[int, float]] = {}  # prefix hash -> (tokens up to it, expires at)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up mid-stream cancels the handler at once, as the API
        # stops generating; a short shutdown_timeout keeps stop() from waiting on paced streams.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def enqueue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    def clear_cache(self) -> None:
        self._cache.clear()

    async def wait_for_requests(self, n: int, timeout: float = 5) -> list[Received]:
        await self._wait(lambda: len(self.requests) >= n, timeout, f"{n} requests (got {len(self.requests)})")
        return self.requests

    async def wait_for_idle(self, timeout: float = 5) -> None:
        """Until no stream is being written: the server notices a hang-up a moment after the client."""
        await self._wait(lambda: self.open_streams == 0, timeout, "no open streams")

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"FakeAnthropic: timed out waiting for {what}")
            await asyncio.sleep(0.005)

    # --- HTTP ---

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        rec = Received(body=body if isinstance(body, dict) else {}, headers=headers, at=time.monotonic(),
                       request_id=_random_id("req_011C"), path=request.path)
        counting = request.path == "/v1/messages/count_tokens"
        if request.path == "/v1/messages" or counting:
            (self.count_requests if counting else self.requests).append(rec)
        try:
            if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
                raise ApiError(404, f"Not found: {request.method} {request.path}")
            self._check_auth(headers)
            if body is None:
                raise ApiError(400, "There was an error parsing the body of your request: invalid JSON")
            _validate(body, counting=counting)
            if self.models is not None and body.get("model") not in self.models:
                raise ApiError(404, f"model: {body.get('model')}")
            if counting:
                return self._json(rec, {"input_tokens": count_input_tokens(body)})
            script = self._queue.popleft() if self._queue else self.default
            rec.script = script
            if script.http_error is not None:
                extra = {"retry-after": str(script.retry_after)} if script.retry_after is not None else {}
                raise ApiError(script.http_error, ERROR_MESSAGES.get(script.http_error, "Error"), extra)
            if body.get("stream"):
                return await self._stream(request, rec, script)
            return await self._complete(request, rec, script)
        except ApiError as error:
            return self._error(rec, error)

    def _check_auth(self, headers: dict) -> None:
        # SDK 2.x sends the API key as `Authorization: Bearer`; older clients and curl use `x-api-key`.
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key and not bearer:
            raise ApiError(401, "x-api-key header is required")
        if self.api_key is not None and (key or bearer) != self.api_key:
            raise ApiError(401, "invalid x-api-key")
        if "anthropic-version" not in headers:
            raise ApiError(400, "anthropic-version: header is required")

    def _json(self, rec: Received, payload: dict, status: int = 200, headers: dict | None = None) -> web.Response:
        rec.status = status
        return web.json_response(payload, status=status, headers={"request-id": rec.request_id, **(headers or {})})

    def _error(self, rec: Received, error: ApiError) -> web.Response:
        payload = {"type": "error", "error": {"type": ERROR_TYPES.get(error.status, "api_error"),
                                              "message": error.message}, "request_id": rec.request_id}
        return self._json(rec, payload, error.status, error.headers)

    # --- generation ---

    def _plan(self, rec: Received, script: Script) -> tuple[str, str, dict]:
        """The answer's text, stop reason and usage; records the cache writes the request makes."""
        body = rec.body
        text = default_text(body) if script.text is None else script.text
        stop_reason = script.stop_reason
        if output_tokens(text) > body["max_tokens"] or stop_reason == "max_tokens":
            text, stop_reason = text[: body["max_tokens"] * 4], "max_tokens"
        usage = self._input_usage(body)
        usage["output_tokens"] = output_tokens(text)
        usage.update(script.usage or {})
        return text, stop_reason, usage

    def _input_usage(self, body: dict) -> dict:
        blocks = _blocks(body)
        running = hashlib.sha256(json.dumps(body["model"]).encode())  # each model has its own cache
        digests, upto, total = [], [], REQUEST_OVERHEAD_TOKENS
        for part, tokens, _ in blocks:
            running.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
            digests.append(running.hexdigest())
            total += tokens
            upto.append(total)
        breakpoints = [i for i, (_, _, cc) in enumerate(blocks) if cc and upto[i] >= self.min_cache_tokens]
        now = self.clock()
        read, hit = 0, None
        for b in breakpoints:
            for p in range(b, max(b - CACHE_LOOKBACK_BLOCKS, -1), -1):
                entry = self._cache.get(digests[p])
                if entry and entry[1] > now:
                    if entry[0] > read:
                        read, hit = entry[0], p
                    break
        created = {"5m": 0, "1h": 0}
        previous = 0
        for b in breakpoints:
            ttl = blocks[b][2].get("ttl", "5m")
            created[ttl] += max(0, upto[b] - max(read, previous))
            previous = upto[b]
            self._cache[digests[b]] = (upto[b], now + CACHE_TTLS[ttl])
        if hit is not None and hit not in breakpoints:  # a read refreshes the entry's lifetime
            tokens, expires = self._cache[digests[hit]]
            self._cache[digests[hit]] = (tokens, max(expires, now + CACHE_TTLS["5m"]))
        creation = created["5m"] + created["1h"]
        return {
            "input_tokens": total - read - creation,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": created["5m"], "ephemeral_1h_input_tokens": created["1h"]},
        }

    def _message(self, rec: Received, text: str, stop_reason: str | None, usage: dict) -> dict:
        return {
            "id": _random_id("msg_01", 22), "type": "message", "role": "assistant", "model": rec.body["model"],
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {**usage, "service_tier": "standard"},
        }

    async def _complete(self, request: web.Request, rec: Received, script: Script) -> web.StreamResponse:
        text, stop_reason, usage = self._plan(rec, script)
        n = len(split_deltas(text, script.delta_chars))
        first = script.delay if script.first_delay is None else script.first_delay
        try:
            await asyncio.sleep(first + script.delay * max(0, n - 1))  # the whole answer is generated first
        except asyncio.CancelledError:
            rec.cancelled = True
            raise
        if script.drop_after_deltas is not None:
            request.transport.abort()
            return web.Response(status=200)  # never reaches the client
        if script.error_after_deltas is not None:
            return self._error(rec, ApiError(529, ERROR_MESSAGES[529]))
        rec.text, rec.usage = text, usage
        return self._json(rec, self._message(rec, text, stop_reason, usage))

    async def _stream(self, request: web.Request, rec: Received, script: Script) -> web.StreamResponse:
        text, stop_reason, usage = self._plan(rec, script)
        chunks = split_deltas(text, script.delta_chars)
        faults = [(n, kind) for n, kind in ((script.error_after_deltas, "error"), (script.drop_after_deltas, "drop"),
                                             (script.end_without_stop_after_deltas, "end")) if n is not None]
        fault_at, fault = min(faults) if faults else (None, None)
        first = script.delay if script.first_delay is None else script.first_delay
        input_fields = {k: v for k, v in usage.items() if k != "output_tokens"}

        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache", "request-id": rec.request_id})

        async def send(event: str, data: dict) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        await resp.prepare(request)
        self.open_streams += 1
        rec.usage = {**input_fields, "output_tokens": 0}
        message = self._message(rec, "", None, {**input_fields, "output_tokens": 1})
        try:
            await send("message_start", {"type": "message_start", "message": message})
            await send("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
            await send("ping", {"type": "ping"})
            for i in range(len(chunks) + 1):
                if fault is not None and i == min(fault_at, len(chunks)):
                    if fault == "error":
                        await send("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                        "message": ERROR_MESSAGES[529]}})
                    elif fault == "drop":
                        # A reset, not a clean close: the client sees a truncated chunked body.
                        request.transport.abort()
                        return resp
                    await resp.write_eof()
                    return resp
                if i == len(chunks):
                    break
                await asyncio.sleep(first if i == 0 else script.delay)
                await send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": chunks[i]}})
                rec.deltas_sent += 1
                rec.text += chunks[i]
                rec.usage["output_tokens"] = output_tokens(rec.text)  # billed for what was generated
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
            rec.usage = usage
            await send("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                         "usage": {k: v for k, v in usage.items() if k != "cache_creation"}})
            await send("message_stop", {"type": "message_stop"})
            await resp.write_eof()
            return resp
        except (asyncio.CancelledError, ConnectionError):
            rec.cancelled = True
            raise
        finally:
            self.open_streams -= 1
