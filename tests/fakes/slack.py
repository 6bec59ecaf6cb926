"""A local stand-in for the Slack Web API methods the bot uses, with Slack's rate limits and size limits.

The real `AsyncWebClient(token, base_url=fake.api_url)` talks to this in-process aiohttp server, so the
wire format is the real one: JSON bodies for chat.postMessage/update/postEphemeral and views.publish,
form or query parameters for the rest, `Authorization: Bearer` (or a `token` form field), HTTP Basic auth
for oauth.v2.access. Answers are HTTP 200 with `{"ok": ...}`, or 429 + `Retry-After` when rate limited.

    fake = FakeSlack(clock=fake_clock, update_limit_per_minute=3)
    await fake.start()
    fake.add_workspace("T1", "xoxb-1")
    client = AsyncWebClient("xoxb-1", base_url=fake.api_url)
    ...
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

WINDOW = 60.0  # Slack's per-minute tiers behave like a sliding minute
MAX_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_CHARS = 3000
# What a token installed from this project's manifest.yml is granted (add_workspace's default).
MANIFEST_SCOPES = ("app_mentions:read,assistant:write,channels:history,groups:history,chat:write,commands,files:write,"
                   "im:history,im:read,im:write,users:read")
_DECODED_FIELDS = ("blocks", "attachments", "view", "files")  # JSON strings when sent form-encoded


@dataclass
class Call:
    method: str
    params: dict
    team_id: str | None
    at: float
    status: int
    response: dict
    token: str | None = None  # the token the call was made with (Bearer or `token` field), if any


@dataclass
class Message:
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list | None
    user: str
    bot_id: str
    team_id: str
    edits: list[tuple[float, str, list | None]] = field(default_factory=list)  # chat.update calls that changed it
    # Every state Slack showed, with when: the post, each edit, each growth of a stream (the benchmark's clock).
    states: list[tuple[float, str, list | None]] = field(default_factory=list)
    deleted: bool = False
    markdown_text: str | None = None
    # Native streaming: "markdown_text" or "chunks" while the stream is open (the mode it started in), else None.
    streaming: str | None = None
    stream_started_at: float = 0.0
    stopped_by_user: bool = False


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str
    blocks: list | None
    message_ts: str
    team_id: str
    thread_ts: str | None = None


@dataclass
class Workspace:
    team_id: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    team_name: str
    enterprise_id: str | None
    scopes: str = ""  # what the token was granted: Slack names them in every answer's x-oauth-scopes header


@dataclass
class SocketConnection:
    """One Socket Mode websocket a client opened with a URL from apps.connections.open."""
    id: str
    team_id: str
    app_id: str
    ws: web.WebSocketResponse


@dataclass
class File:
    """A file uploaded with files.uploadV2: asked for (getUploadURLExternal), sent, then shared
    (completeUploadExternal)."""

    id: str
    team_id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str = ""
    channel: str | None = None
    message_ts: str | None = None


class SlackError(Exception):
    def __init__(self, error: str, *, status: int = 200, retry_after: int | None = None, page: str | None = None):
        super().__init__(error)
        self.error, self.status, self.retry_after = error, status, retry_after
        self.page = page  # not Slack's JSON but an edge proxy's text/plain error page (a 502/503 in an outage)


class FakeSlack:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, update_limit_per_minute: int = 50,
                 post_per_channel_per_second: float = 1.0, post_burst: int = 3, replies_limit_per_minute: int = 1,
                 max_markdown_chars: int = 12000, max_text_chars: int = 4000, replies_page_limit: int = 15,
                 stream_starts_per_minute: int = 20, stream_appends_per_minute: int = 100,
                 stream_stops_per_minute: int = 20, stream_timeout: float = 300.0, status_per_minute: int = 60,
                 sessions_per_minute: int = 50):
        self.clock = clock
        # Plain attributes, read on every call, so a test can tighten a limit on a running fake.
        self.update_limit_per_minute = update_limit_per_minute
        # Native streaming (Tier 2 start/stop, Tier 4 append, per workspace; REFERENCE.md marks the numbers
        # unverified). A stream left open this long expires: appends and stops then fail.
        self.stream_starts_per_minute = stream_starts_per_minute
        self.stream_appends_per_minute = stream_appends_per_minute
        self.stream_stops_per_minute = stream_stops_per_minute
        self.stream_timeout = stream_timeout
        self.status_per_minute = status_per_minute  # assistant.threads.setStatus, per channel
        self.sessions_per_minute = sessions_per_minute  # agents.sessions.setStatus (Tier 3), per workspace
        self.stream_unsupported_channels: set[str] = set()  # startStream answers channel_type_not_supported there
        self.messages_tab_disabled = False  # the app's Messages tab is off: no streams in DMs
        self.agent_session_stopped_subscribed = True
        self.statuses: dict[tuple[str, str], dict] = {}  # (channel, thread_ts) -> assistant thread status
        self.sessions: dict[tuple[str, str], dict] = {}  # (channel, thread_ts) -> agent session
        self.suggested_prompts: dict[str, dict] = {}  # channel -> prompts last set
        self.post_per_channel_per_second = post_per_channel_per_second
        self.post_burst = post_burst
        self.replies_limit_per_minute = replies_limit_per_minute
        self.max_markdown_chars = max_markdown_chars
        self.max_text_chars = max_text_chars
        self.replies_page_limit = replies_page_limit
        self.client_id: str | None = None  # when set, oauth.v2.access checks the app's credentials
        self.client_secret: str | None = None
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.ephemeral: list[Ephemeral] = []
        self.home_views: dict[tuple[str, str], dict] = {}
        self.modals: list[dict] = []  # views.open: every modal opened, newest last
        self._used_triggers: set[str] = set()
        self.oauth_installs: dict[str, dict] = {}
        self.responses: dict[str, list] = defaultdict(list)  # response_url posts, by the url's last segment
        self.workspaces: dict[str, Workspace] = {}
        self.users: dict[tuple[str, str], dict] = {}
        self.files: dict[str, File] = {}
        self._file_ids = itertools.count(1)
        self._tokens: dict[str, str] = {}
        self._oauth_bot_ids: dict[str, str] = {}
        # Token rotation: a refresh token (xoxe-1-...) -> what its exchange installs; bot tokens a refresh replaced.
        self.token_expires_in = 43200  # what a refresh answers: Slack's rotating tokens live 12 hours
        self._refresh_tokens: dict[str, dict] = {}
        self._expired_tokens: set[str] = set()
        self._refresh_ids = itertools.count(1)
        self._history: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self._faults: dict[str, deque] = defaultdict(deque)
        self._windows: dict[tuple[str, str], deque] = defaultdict(deque)
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._last_ts_us = 0
        # Socket Mode: app-level tokens (xapp-...), the one-use URLs issued for them, the open websockets,
        # and every message a client sent back over one that names an envelope (its acks).
        self._app_tokens: dict[str, tuple[str, str]] = {}  # token -> (team_id, app_id)
        self._socket_tickets: dict[str, tuple[str, str]] = {}  # socket id -> (team_id, app_id)
        self._socket_ids = itertools.count(1)
        self._envelope_ids = itertools.count(1)
        self.socket_connections: list[SocketConnection] = []
        self.socket_acks: list[dict] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._methods = {
            "auth.test": self._auth_test, "chat.postMessage": self._post_message, "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral, "chat.delete": self._delete,
            "conversations.replies": self._replies, "conversations.open": self._open, "users.info": self._users_info,
            "views.publish": self._views_publish, "views.open": self._views_open, "oauth.v2.access": self._oauth_access,
            "chat.startStream": self._start_stream, "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream, "assistant.threads.setStatus": self._set_thread_status,
            "agents.sessions.setStatus": self._set_session_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "files.getUploadURLExternal": self._get_upload_url, "files.completeUploadExternal": self._complete_upload,
        }

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_post("/response/{id}", self._handle_response_url)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/socket/{id}", self._handle_socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for connection in list(self.socket_connections):  # an open websocket would hold up the shutdown
            await connection.ws.close(code=1001, message=b"server shutting down")
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- test set-up -------------------------------------------------------------------------------------

    def add_workspace(self, team_id: str, bot_token: str, *, bot_user_id: str = "UBOT", bot_id: str = "BBOT",
                      team_name: str = "Acme", enterprise_id: str | None = None, scopes: str = MANIFEST_SCOPES) -> None:
        self.remove_workspace(team_id)
        self.workspaces[team_id] = Workspace(team_id, bot_token, bot_user_id, bot_id, team_name, enterprise_id, scopes)
        self._tokens[bot_token] = team_id

    def remove_workspace(self, team_id: str) -> None:
        """The app was uninstalled: its token stops working, what it posted stays."""
        workspace = self.workspaces.pop(team_id, None)
        if workspace:
            self._tokens.pop(workspace.bot_token, None)

    def add_app_token(self, app_token: str, team_id: str, *, app_id: str = "A0001") -> None:
        """An app-level token (xapp-...) with connections:write: it opens Socket Mode connections and
        nothing else (Web API methods refuse it with not_allowed_token_type)."""
        self._app_tokens[app_token] = (team_id, app_id)

    def add_user(self, team_id: str, user_id: str, *, is_admin: bool = False, is_owner: bool = False,
                 name: str = "someone") -> None:
        self.users[(team_id, user_id)] = {
            "id": user_id, "team_id": team_id, "name": name, "real_name": name.title(), "deleted": False,
            "is_admin": is_admin, "is_owner": is_owner, "is_primary_owner": False, "is_restricted": False,
            "is_ultra_restricted": False, "is_bot": False, "is_app_user": False, "tz": "Europe/London",
            "profile": {"real_name": name.title(), "display_name": name, "team": team_id},
        }

    def add_history(self, channel: str, thread_ts: str, messages: list[dict]) -> None:
        self._history[(channel, thread_ts)].extend(messages)

    def add_oauth_code(self, code: str, team_id: str, *, bot_token: str | None = None, bot_user_id: str = "UBOT",
                       bot_id: str = "BBOT", team_name: str = "Acme", enterprise_id: str | None = None,
                       user_id: str = "U0001", app_id: str = "A0001", user_token: str | None = None,
                       scope: str = "app_mentions:read,chat:write,commands,im:history,users:read",
                       user_scope: str = "", org_wide: bool = False, rotating: bool = False,
                       expires_in: int = 43200) -> None:
        """An authorization code the app can exchange once; the bot token works only after the exchange.

        `rotating`: the app has token rotation on: the bot token expires in `expires_in` seconds and the
        payload carries a `refresh_token` (xoxe-1-...) that oauth.v2.access (grant_type=refresh_token) trades
        for a new bot token and a new refresh token; the replaced token then answers `token_expired`.

        `org_wide`: an org-wide install on Enterprise Grid (pass the org as `team_id` and `enterprise_id`):
        the payload has no team, and the fake keeps the org's token as a workspace named after the org."""
        authed_user = {"id": user_id, "scope": user_scope, "token_type": "user"}
        if user_token:
            authed_user["access_token"] = user_token
        self.oauth_installs[code] = {
            "ok": True, "app_id": app_id, "authed_user": authed_user, "scope": scope, "token_type": "bot",
            "access_token": bot_token or f"xoxb-{team_id}-{zlib.crc32(code.encode()):010d}",
            "bot_user_id": bot_user_id, "team": None if org_wide else {"id": team_id, "name": team_name},
            "enterprise": {"id": enterprise_id, "name": f"{team_name} Grid"} if enterprise_id else None,
            "is_enterprise_install": org_wide,
        }
        self._oauth_bot_ids[code] = bot_id
        if rotating:
            payload = self.oauth_installs[code]
            payload["refresh_token"] = self._new_refresh_token(payload, bot_id)
            payload["expires_in"] = expires_in

    def _new_refresh_token(self, payload: dict, bot_id: str) -> str:
        token = f"xoxe-1-{next(self._refresh_ids)}-{zlib.crc32(payload['access_token'].encode()):010d}"
        self._refresh_tokens[token] = {"payload": payload, "bot_id": bot_id}
        return token

    def inject(self, method: str, error: str, *, count: int = 1, retry_after: int = 1, status: int | None = None) -> None:
        """The next `count` calls of `method` fail; "ratelimited" answers 429 + Retry-After like Slack."""
        status = status or (429 if error == "ratelimited" else 200)
        self._faults[method].extend([(error, status, retry_after)] * count)

    def inject_outage(self, method: str, *, status: int = 503, count: int = 1,
                      page: str = "upstream connect error or disconnect/reset before headers") -> None:
        """The next `count` calls of `method` get an edge proxy's plain-text error page, not Slack's JSON."""
        self._faults[method].extend([(f"page:{page}", status, None)] * count)

    def delete_message(self, channel: str, ts: str) -> None:
        """Someone deleted the bot's message in Slack."""
        self.messages[f"{channel}:{ts}"].deleted = True

    def press_stop(self, channel: str, thread_ts: str, user: str) -> dict:
        """The user clicks Slack's Stop on the thread's agent session: Slack stops the session's open streams
        (later appends fail with `stopped_by_user`) and sends `agent_session_stopped`, returned here for the
        test to deliver."""
        stopped = []
        for message in self.thread(channel, thread_ts):
            if message.streaming:
                message.streaming, message.stopped_by_user = None, True
                stopped.append(message.ts)
        return {"type": "agent_session_stopped", "channel": channel, "thread_ts": thread_ts, "user": user,
                "streaming_message_ts": stopped, "event_ts": self._next_ts()}

    def thread_status(self, channel: str, thread_ts: str) -> str:
        """The assistant status shown in the thread now ("" when none): it clears when the app posts in the
        thread, or after two minutes."""
        status = self.statuses.get((channel, thread_ts))
        if not status or self.clock() - status["at"] > 120:
            return ""
        return status["status"]

    # -- inspection --------------------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        found = [m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts and not m.deleted]
        return sorted(found, key=lambda m: float(m.ts))

    def channel_messages(self, channel: str) -> list[Message]:
        """Every message the bot has in the channel, threads included, deleted ones too, in ts order."""
        return sorted((m for m in self.messages.values() if m.channel == channel), key=lambda m: float(m.ts))

    def visible_markdown(self, message: Message) -> str:
        blocks = message.blocks or []
        markdown = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
        if markdown:
            return "".join(markdown)
        sections = [b["text"].get("text", "") for b in blocks
                    if b.get("type") == "section" and isinstance(b.get("text"), dict)]
        if sections:
            return "".join(sections)
        return message.text or message.markdown_text or ""

    # -- Socket Mode --------------------------------------------------------------------------------------

    async def wait_for_socket(self, timeout: float = 10.0) -> SocketConnection:
        """The most recent open Socket Mode connection, once a client has connected."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            open_ = [c for c in self.socket_connections if not c.ws.closed]
            if open_:
                return open_[-1]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("no Socket Mode client connected")
            await asyncio.sleep(0.02)

    async def socket_send(self, payload: dict, *, type: str = "events_api", retry_attempt: int = 0,
                          retry_reason: str = "", accepts_response_payload: bool = False) -> str:
        """Deliver `payload` to the connected client in a Socket Mode envelope, as Slack does; returns its
        envelope_id (the client must ack it: see `socket_acks` and `wait_for_ack`)."""
        connection = await self.wait_for_socket()
        envelope_id = f"{next(self._envelope_ids):08d}-fake-{connection.id}"
        await connection.ws.send_json({
            "envelope_id": envelope_id, "type": type, "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt, "retry_reason": retry_reason,
        })
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict:
        """The client's acknowledgement of the envelope (`{"envelope_id": ...}`, maybe with a payload)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for ack in self.socket_acks:
                if ack.get("envelope_id") == envelope_id:
                    return ack
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"envelope {envelope_id} was not acknowledged; acks: {self.socket_acks}")
            await asyncio.sleep(0.02)

    def _connections_open(self, token: str | None, now: float) -> web.Response:
        """apps.connections.open: only an app-level token; answers a one-use websocket URL."""
        team_id = None
        try:
            if not token:
                raise SlackError("not_authed")
            if token in self._tokens:
                raise SlackError("not_allowed_token_type")
            if token not in self._app_tokens:
                raise SlackError("invalid_auth")
            team_id, app_id = self._app_tokens[token]
            self._take_fault("apps.connections.open")
            socket_id = f"{next(self._socket_ids)}"
            self._socket_tickets[socket_id] = (team_id, app_id)
            body, status, headers = {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket/{socket_id}"}, 200, {}
        except SlackError as failure:
            body, status = {"ok": False, "error": failure.error}, failure.status
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        self.calls.append(Call("apps.connections.open", {}, team_id, now, status, body))
        return web.json_response(body, status=status, headers=headers)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = self._socket_tickets.pop(request.match_info["id"], None)
        if ticket is None:  # never issued, or already used
            raise web.HTTPUnauthorized(text="invalid_ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = SocketConnection(request.match_info["id"], ticket[0], ticket[1], ws)
        self.socket_connections.append(connection)
        try:
            open_count = sum(1 for c in self.socket_connections if not c.ws.closed)
            await ws.send_json({
                "type": "hello", "num_connections": open_count,
                "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": ticket[1]},
            })
            async for message in ws:
                if message.type != web.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and "envelope_id" in data:
                    self.socket_acks.append(data)
        finally:
            self.socket_connections.remove(connection)
        return ws

    # -- HTTP --------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        now = self.clock()
        workspace = None
        params: dict = {}
        token = None
        try:
            params, token = await self._read(request)
            if method == "apps.connections.open":
                return self._connections_open(token, now)
            if method not in self._methods:
                raise SlackError("unknown_method")
            if method != "oauth.v2.access":
                workspace = self._authenticate(token)
            self._take_fault(method)
            body = self._methods[method](workspace, params, now)
            status, headers = 200, {}
        except SlackError as failure:
            if failure.page is not None:
                self.calls.append(Call(method, params, workspace.team_id if workspace else None, now, failure.status,
                                       {"page": failure.page}, token))
                return web.Response(status=failure.status, text=failure.page, content_type="text/plain")
            body, status = {"ok": False, "error": failure.error}, failure.status
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        team_id = workspace.team_id if workspace else None
        if method == "oauth.v2.access" and body.get("ok"):
            team_id = (body["team"] or body["enterprise"])["id"]  # the install it answered belongs to that workspace
        self.calls.append(Call(method, params, team_id, now, status, body, token))
        if workspace is not None:
            headers["x-oauth-scopes"] = workspace.scopes
        return web.json_response(body, status=status, headers=headers)

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """The upload URL files.getUploadURLExternal handed out: takes the bytes once (Slack answers "OK - <size>")."""
        upload = self.files.get(request.match_info["file_id"])
        if upload is None or upload.content is not None:
            return web.Response(status=404, text="Not Found")
        upload.content = await request.read()
        return web.Response(text=f"OK - {len(upload.content)}")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        body = await request.json() if request.content_type == "application/json" else dict(await request.post())
        self.responses[request.match_info["id"]].append(body)
        return web.Response(text="ok")

    async def _read(self, request: web.Request) -> tuple[dict, str | None]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            try:
                body = json.loads(await request.text() or "{}")
                # Slack ignores a token inside a JSON body: JSON callers must use the Authorization header.
                body.pop("token", None)
            except (ValueError, AttributeError):
                raise SlackError("invalid_json") from None
            params.update(body)
        elif request.can_read_body:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        for name in _DECODED_FIELDS:
            if isinstance(params.get(name), str):
                try:
                    params[name] = json.loads(params[name])
                except ValueError:
                    raise SlackError(f"invalid_{name}_format" if name != "view" else "invalid_arguments") from None
        token = params.pop("token", None)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            token = credentials
        elif scheme.lower() == "basic" and credentials:  # oauth.v2.access: the app's id and secret
            params["client_id"], _, params["client_secret"] = base64.b64decode(credentials).decode().partition(":")
        return params, token

    def _authenticate(self, token: str | None) -> Workspace:
        if not token:
            raise SlackError("not_authed")
        team_id = self._tokens.get(token)
        if team_id is None and token in self._expired_tokens:
            raise SlackError("token_expired")
        if team_id is None:
            raise SlackError("not_allowed_token_type" if token in self._app_tokens else "invalid_auth")
        return self.workspaces[team_id]

    def _take_fault(self, method: str) -> None:
        if self._faults[method]:
            error, status, retry_after = self._faults[method].popleft()
            page = error.removeprefix("page:") if error.startswith("page:") else None
            raise SlackError(error, status=status, retry_after=retry_after if status == 429 else None, page=page)

    # -- limits --------------------------------------------------------------------------------------------

    def _per_minute(self, key: tuple[str, str], limit: int, now: float) -> None:
        """Sliding 60 s window over the calls let through; refused calls don't use up the budget."""
        window = self._windows[key]
        while window and window[0] <= now - WINDOW:
            window.popleft()
        if len(window) >= limit:
            raise SlackError("ratelimited", status=429, retry_after=max(1, math.ceil(window[0] + WINDOW - now)))
        window.append(now)

    def _per_channel_post(self, team_id: str, channel: str, now: float) -> None:
        """Token bucket: Slack allows short bursts, then about one post per second per channel."""
        rate, burst = self.post_per_channel_per_second, self.post_burst
        tokens, last = self._buckets.get((team_id, channel), (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1:
            self._buckets[(team_id, channel)] = [tokens, now]
            raise SlackError("ratelimited", status=429, retry_after=max(1, math.ceil((1 - tokens) / rate)))
        self._buckets[(team_id, channel)] = [tokens - 1, now]

    def _check_content(self, params: dict, *, blocks: list | None, text: str) -> None:
        markdown_text = params.get("markdown_text")
        if markdown_text is not None and (params.get("text") or params.get("blocks")):
            raise SlackError("invalid_arguments")
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
                raise SlackError("invalid_blocks")
            for block in blocks:
                if (not isinstance(block, dict) or not block.get("type")
                        or (block["type"] == "markdown" and not block.get("text"))
                        or (block["type"] == "section" and len((block.get("text") or {}).get("text", "")) > MAX_SECTION_CHARS)):
                    raise SlackError("invalid_blocks")
            if sum(len(b["text"]) for b in blocks if b["type"] == "markdown") > self.max_markdown_chars:
                raise SlackError("msg_too_long")
        if markdown_text is not None and len(markdown_text) > self.max_markdown_chars:
            raise SlackError("msg_too_long")
        if not blocks and len(text) > self.max_text_chars:
            raise SlackError("msg_too_long")

    # -- methods -------------------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        # Epoch-like (not the injected clock) so bot replies sort after the user messages tests make up.
        self._last_ts_us = max(self._last_ts_us + 1, int(time.time() * 1_000_000))
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    @staticmethod
    def _message_json(m: Message) -> dict:
        body = {"type": "message", "text": m.text, "user": m.user, "bot_id": m.bot_id, "app_id": "A0001",
                "ts": m.ts, "team": m.team_id}
        if m.blocks:
            body["blocks"] = m.blocks
        if m.thread_ts:
            body["thread_ts"] = m.thread_ts
        if m.edits:
            body["edited"] = {"user": m.user, "ts": m.ts}
        return body

    def _own_message(self, ws: Workspace, channel: str | None, ts: str | None) -> Message:
        if not channel:
            raise SlackError("channel_not_found")
        message = self.messages.get(f"{channel}:{ts}")
        if message is None or message.deleted or message.team_id != ws.team_id:
            raise SlackError("message_not_found")
        return message

    def _auth_test(self, ws: Workspace, params: dict, now: float) -> dict:
        body = {"ok": True, "url": f"https://{ws.team_name.lower().replace(' ', '-')}.slack.com/", "team": ws.team_name,
                "user": "bot", "team_id": ws.team_id, "user_id": ws.bot_user_id, "bot_id": ws.bot_id,
                "is_enterprise_install": False}
        if ws.enterprise_id:
            body["enterprise_id"] = ws.enterprise_id
        return body

    def _post_message(self, ws: Workspace, params: dict, now: float) -> dict:
        channel = params.get("channel")
        if not channel:
            raise SlackError("channel_not_found")
        self._per_channel_post(ws.team_id, channel, now)
        blocks, text = params.get("blocks"), params.get("text") or ""
        if not (text or blocks or params.get("markdown_text") or params.get("attachments")):
            raise SlackError("no_text")
        self._check_content(params, blocks=blocks, text=text)
        message = Message(channel, self._next_ts(), params.get("thread_ts") or None, text, blocks or None,
                          ws.bot_user_id, ws.bot_id, ws.team_id, markdown_text=params.get("markdown_text"))
        message.states.append((now, text or message.markdown_text or "", message.blocks))
        self.messages[f"{channel}:{message.ts}"] = message
        self.statuses.pop((channel, message.thread_ts or ""), None)  # a reply in the thread clears its status
        return {"ok": True, "channel": channel, "ts": message.ts, "message": self._message_json(message)}

    def _update(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "chat.update"), self.update_limit_per_minute, now)
        channel, ts = params.get("channel"), params.get("ts")
        message = self._own_message(ws, channel, ts)
        if self._still_streaming(message, now):
            raise SlackError("streaming_state_conflict")
        if not any(params.get(k) is not None for k in ("text", "blocks", "markdown_text", "attachments")):
            raise SlackError("no_text")
        if params.get("markdown_text") is not None:
            text, blocks = "", None
        else:
            # Like Slack: a field left out keeps the message's previous value; `blocks: []` removes them.
            text = params.get("text", message.text)
            blocks = params.get("blocks", message.blocks)
        self._check_content(params, blocks=blocks, text=text)
        message.text, message.blocks = text, blocks or None
        message.markdown_text = params.get("markdown_text")
        message.edits.append((now, text, message.blocks))
        message.states.append((now, text or message.markdown_text or "", message.blocks))
        return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": self._message_json(message)}

    # -- native streaming and agent features -------------------------------------------------------------

    def _still_streaming(self, message: Message, now: float) -> bool:
        """Whether the message's stream is open; one open longer than `stream_timeout` expires (half-rendered)."""
        if message.streaming and now - message.stream_started_at > self.stream_timeout:
            message.streaming = None
        return message.streaming is not None

    def _stream_content(self, params: dict) -> tuple[str | None, str]:
        """(mode, markdown) of a streaming call: `markdown_text` or `chunks`, never both."""
        markdown, chunks = params.get("markdown_text"), params.get("chunks")
        if markdown is not None and chunks is not None:
            raise SlackError("invalid_arguments")
        if chunks is not None:
            # An empty list is allowed: slack_sdk's chat_stream() stops with `chunks=[]` when nothing is buffered.
            if not isinstance(chunks, list):
                raise SlackError("invalid_chunks")
            text = ""
            for chunk in chunks:
                if not isinstance(chunk, dict) or chunk.get("type") not in ("markdown_text", "task_update", "plan_update", "blocks"):
                    raise SlackError("invalid_chunks")
                if chunk["type"] == "markdown_text":
                    if not isinstance(chunk.get("text"), str):
                        raise SlackError("invalid_chunks")
                    text += chunk["text"]
            return "chunks", text
        if markdown is None:
            return None, ""
        if not isinstance(markdown, str):
            raise SlackError("invalid_arguments")
        if len(markdown) > self.max_markdown_chars:
            raise SlackError("msg_too_long")
        return "markdown_text", markdown

    def _grow(self, message: Message, mode: str | None, text: str, now: float) -> None:
        if mode is not None and mode != message.streaming:
            raise SlackError("streaming_mode_mismatch")
        if len((message.markdown_text or "") + text) > self.max_markdown_chars:
            raise SlackError("msg_too_long")
        message.markdown_text = (message.markdown_text or "") + text
        message.states.append((now, message.markdown_text, None))

    def _streamed_message(self, ws: Workspace, params: dict, now: float) -> Message:
        message = self._own_message(ws, params.get("channel"), params.get("ts"))
        if message.stopped_by_user:
            raise SlackError("stopped_by_user")
        if not self._still_streaming(message, now):
            raise SlackError("message_not_in_streaming_state")
        return message

    def _start_stream(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "chat.startStream"), self.stream_starts_per_minute, now)
        channel, thread_ts = params.get("channel"), params.get("thread_ts")
        if not channel:
            raise SlackError("channel_not_found")
        if not thread_ts:
            raise SlackError("invalid_arguments")  # a stream is always a reply in a thread
        if channel in self.stream_unsupported_channels:
            raise SlackError("channel_type_not_supported")
        if channel.startswith("D"):
            if self.messages_tab_disabled:
                raise SlackError("messages_tab_disabled")
        else:
            if not params.get("recipient_team_id"):
                raise SlackError("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise SlackError("missing_recipient_user_id")
        mode, text = self._stream_content(params)
        self._per_channel_post(ws.team_id, channel, now)  # a new message in the channel, like a post
        message = Message(channel, self._next_ts(), thread_ts, "", None, ws.bot_user_id, ws.bot_id, ws.team_id,
                          markdown_text="", streaming=mode or "markdown_text", stream_started_at=now)
        self.messages[f"{channel}:{message.ts}"] = message
        self.statuses.pop((channel, thread_ts), None)
        self._grow(message, mode, text, now)
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _append_stream(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "chat.appendStream"), self.stream_appends_per_minute, now)
        message = self._streamed_message(ws, params, now)
        mode, text = self._stream_content(params)
        if mode is None:
            raise SlackError("invalid_arguments")
        self._grow(message, mode, text, now)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _stop_stream(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "chat.stopStream"), self.stream_stops_per_minute, now)
        message = self._streamed_message(ws, params, now)
        mode, text = self._stream_content(params)
        blocks = params.get("blocks")
        if blocks is not None and (not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS
                                   or not all(isinstance(b, dict) and b.get("type") for b in blocks)):
            raise SlackError("invalid_blocks")
        self._grow(message, mode, text, now)
        message.streaming = None
        if blocks:
            message.blocks = blocks  # rendered under the streamed text
        if params.get("session_status") and message.thread_ts:
            self._session(ws, message.channel, message.thread_ts, params["session_status"], now)
        return {"ok": True, "channel": message.channel, "ts": message.ts,
                "message": {**self._message_json(message), "text": message.markdown_text}}

    def _set_thread_status(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, thread_ts, status = params.get("channel_id"), params.get("thread_ts"), params.get("status")
        if not channel or not thread_ts or status is None:
            raise SlackError("invalid_arguments")
        self._per_minute((ws.team_id, f"assistant.threads.setStatus:{channel}"), self.status_per_minute, now)
        loading = params.get("loading_messages") or []
        if not isinstance(loading, list) or len(loading) > 10:
            raise SlackError("invalid_arguments")
        self.statuses[(channel, thread_ts)] = {"status": status, "loading_messages": loading, "at": now}
        return {"ok": True}

    def _session(self, ws: Workspace, channel: str, thread_ts: str, status: str, now: float, **extra) -> None:
        if status not in ("processing", "active", "suspended", "closed"):
            raise SlackError("invalid_arguments")
        session = self.sessions.setdefault((channel, thread_ts), {"history": []})
        session.update(status=status, team_id=ws.team_id, **{k: v for k, v in extra.items() if v is not None})
        session["history"].append((now, status))

    def _set_session_status(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "agents.sessions.setStatus"), self.sessions_per_minute, now)
        channel, thread_ts = params.get("channel_id"), params.get("thread_ts")
        if not channel or not thread_ts:
            raise SlackError("invalid_arguments")
        self._session(ws, channel, thread_ts, params.get("status"), now,
                      title=params.get("title"), initiator_user_id=params.get("initiator_user_id"))
        body = {"ok": True}
        if not self.agent_session_stopped_subscribed:
            body["warning"] = "missing_agent_session_stopped_event_subscription"
        return body

    def _set_suggested_prompts(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, prompts = params.get("channel_id"), params.get("prompts")
        if not channel or not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            raise SlackError("invalid_arguments")
        if not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise SlackError("invalid_arguments")
        self.suggested_prompts[channel] = {"title": params.get("title"), "prompts": prompts, "thread_ts": params.get("thread_ts")}
        return {"ok": True}

    def _post_ephemeral(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, user = params.get("channel"), params.get("user")
        if not channel or not user:
            raise SlackError("channel_not_found" if not channel else "user_not_found")
        blocks, text = params.get("blocks"), params.get("text") or ""
        if not (text or blocks or params.get("markdown_text")):
            raise SlackError("no_text")
        self._check_content(params, blocks=blocks, text=text)
        ephemeral = Ephemeral(channel, user, text or params.get("markdown_text") or "", blocks or None,
                              self._next_ts(), ws.team_id, params.get("thread_ts"))
        self.ephemeral.append(ephemeral)
        return {"ok": True, "message_ts": ephemeral.message_ts}

    def _delete(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, ts = params.get("channel"), params.get("ts")
        self._own_message(ws, channel, ts).deleted = True
        return {"ok": True, "channel": channel, "ts": ts}

    def _replies(self, ws: Workspace, params: dict, now: float) -> dict:
        self._per_minute((ws.team_id, "conversations.replies"), self.replies_limit_per_minute, now)
        channel, thread_ts = params.get("channel"), params.get("ts")
        if not channel:
            raise SlackError("channel_not_found")
        if not thread_ts:
            raise SlackError("thread_not_found")
        ours = [self._message_json(m) for m in self.thread(channel, thread_ts)]
        everything = sorted(self._history[(channel, thread_ts)] + ours,
                            key=lambda m: (m.get("ts") != thread_ts, float(m.get("ts") or 0)))
        limit = min(int(params.get("limit") or 1000), self.replies_page_limit)
        start = int(base64.b64decode(params["cursor"]).decode().removeprefix("offset:")) if params.get("cursor") else 0
        page, more = everything[start:start + limit], start + limit < len(everything)
        cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
        return {"ok": True, "messages": page, "has_more": more, "response_metadata": {"next_cursor": cursor}}

    def _open(self, ws: Workspace, params: dict, now: float) -> dict:
        users = sorted(u for u in str(params.get("users") or "").split(",") if u)
        if not users:
            raise SlackError("users_list_not_supplied")
        # Deterministic ids: U0001's DM is D0001, like the DMs the test harness sends events from.
        channel = f"D{users[0][1:]}" if len(users) == 1 else f"G{zlib.crc32(','.join(users).encode()):08X}"
        return {"ok": True, "channel": {"id": channel}}

    def _get_upload_url(self, ws: Workspace, params: dict, now: float) -> dict:
        filename = params.get("filename")
        try:
            length = int(params.get("length") or 0)
        except ValueError:
            raise SlackError("invalid_arguments") from None
        if not filename or length <= 0:
            raise SlackError("invalid_arguments")
        file_id = f"F{next(self._file_ids):08d}"
        self.files[file_id] = File(file_id, ws.team_id, filename, length)
        return {"ok": True, "file_id": file_id, "upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{file_id}"}

    def _complete_upload(self, ws: Workspace, params: dict, now: float) -> dict:
        listed = params.get("files")
        if not isinstance(listed, list) or not listed:
            raise SlackError("invalid_arguments")
        uploads = []
        for item in listed:
            upload = self.files.get(item.get("id") if isinstance(item, dict) else None)
            if upload is None or upload.team_id != ws.team_id or upload.channel is not None:
                raise SlackError("file_not_found")
            if upload.content is None or len(upload.content) != upload.length:
                raise SlackError("file_upload_size_mismatch" if upload.content is not None else "file_not_found")
            uploads.append((upload, item.get("title") or upload.filename))
        channel = params.get("channel_id")
        ts = None
        if channel:
            self._per_channel_post(ws.team_id, channel, now)
            text = params.get("initial_comment") or ""
            message = Message(channel, self._next_ts(), params.get("thread_ts") or None, text, None, ws.bot_user_id,
                              ws.bot_id, ws.team_id)
            message.states.append((now, text, None))
            self.messages[f"{channel}:{message.ts}"] = message
            ts = message.ts
        for upload, title in uploads:
            upload.title, upload.channel, upload.message_ts = title, channel or "", ts
        return {"ok": True, "files": [{"id": u.id, "name": u.filename, "title": u.title} for u, _ in uploads]}

    def _users_info(self, ws: Workspace, params: dict, now: float) -> dict:
        user = self.users.get((ws.team_id, params.get("user") or ""))
        if user is None:
            raise SlackError("user_not_found")
        return {"ok": True, "user": user}

    def _views_open(self, ws: Workspace, params: dict, now: float) -> dict:
        """A modal for the person whose interaction sent `trigger_id` (each trigger opens one view)."""
        trigger, view = params.get("trigger_id"), params.get("view")
        if not trigger:
            raise SlackError("invalid_arguments")
        if trigger in self._used_triggers:
            raise SlackError("invalid_trigger_id")
        if not isinstance(view, dict) or view.get("type") != "modal" or not isinstance(view.get("title"), dict):
            raise SlackError("invalid_arguments")
        blocks = view.get("blocks") or []
        if len(blocks) > MAX_HOME_BLOCKS:
            raise SlackError("invalid_blocks")
        if any(b.get("type") == "input" for b in blocks) and not view.get("submit"):
            raise SlackError("invalid_arguments")  # a modal with inputs needs a submit button
        self._used_triggers.add(trigger)
        opened = {"id": f"V{len(self.modals) + 1:08d}M", "team_id": ws.team_id, "type": "modal", "blocks": blocks,
                  "title": view["title"], "submit": view.get("submit"), "close": view.get("close"),
                  "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                  "state": {"values": {}}, "hash": f"{now:.6f}", "app_id": "A0001", "bot_id": ws.bot_id,
                  "trigger_id": trigger}
        self.modals.append(opened)
        return {"ok": True, "view": opened}

    def _views_publish(self, ws: Workspace, params: dict, now: float) -> dict:
        user_id, view = params.get("user_id"), params.get("view")
        if not user_id or not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments")
        if len(view.get("blocks") or []) > MAX_HOME_BLOCKS:
            raise SlackError("invalid_blocks")
        view_id = f"V{zlib.crc32(f'{ws.team_id}:{user_id}'.encode()):08X}"
        published = {"id": view_id, "team_id": ws.team_id, "type": "home", "blocks": view.get("blocks") or [],
                     "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
                     "state": {"values": {}}, "hash": f"{now:.6f}", "app_id": "A0001", "bot_id": ws.bot_id}
        self.home_views[(ws.team_id, user_id)] = published
        return {"ok": True, "view": published}

    def _oauth_access(self, ws: None, params: dict, now: float) -> dict:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if not client_id or (self.client_id and client_id != self.client_id):
            raise SlackError("invalid_client_id")
        if not client_secret or (self.client_secret and client_secret != self.client_secret):
            raise SlackError("bad_client_secret")
        if params.get("grant_type") == "refresh_token":
            return self._refresh(params)
        code = params.get("code") or ""
        payload = self.oauth_installs.pop(code, None)  # a code works once, like Slack's
        if payload is None:
            raise SlackError("invalid_code")
        team = payload["team"] or payload["enterprise"]
        self.add_workspace(team["id"], payload["access_token"], bot_user_id=payload["bot_user_id"],
                           bot_id=self._oauth_bot_ids.pop(code), team_name=team["name"],
                           enterprise_id=(payload["enterprise"] or {}).get("id"), scopes=payload["scope"])
        return payload

    def _refresh(self, params: dict) -> dict:
        """oauth.v2.access with grant_type=refresh_token: a new bot token and refresh token for the install;
        the refresh token is used up and the bot token it replaced stops working (`token_expired`)."""
        refresh_token = params.get("refresh_token") or ""
        grant = self._refresh_tokens.pop(refresh_token, None)
        if grant is None:
            raise SlackError("invalid_refresh_token")
        previous = grant["payload"]
        team = previous["team"] or previous["enterprise"]
        workspace = self.workspaces.get(team["id"])
        if workspace is None or workspace.bot_token != previous["access_token"]:
            raise SlackError("invalid_refresh_token")  # uninstalled (or revoked) since
        access_token = f"xoxb-{team['id']}-{zlib.crc32(refresh_token.encode()):010d}-r"
        payload = {
            "ok": True, "app_id": previous["app_id"], "scope": previous["scope"], "token_type": "bot",
            "access_token": access_token, "bot_user_id": previous["bot_user_id"],
            "refresh_token": "", "expires_in": self.token_expires_in,
            "team": previous["team"], "enterprise": previous["enterprise"],
            "is_enterprise_install": previous["is_enterprise_install"],
        }
        payload["refresh_token"] = self._new_refresh_token(payload, grant["bot_id"])
        self._expired_tokens.add(previous["access_token"])
        self.add_workspace(team["id"], access_token, bot_user_id=workspace.bot_user_id, bot_id=workspace.bot_id,
                           team_name=workspace.team_name, enterprise_id=workspace.enterprise_id, scopes=workspace.scopes)
        return dict(payload)
