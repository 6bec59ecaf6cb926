"""A local stand-in for the Slack Web API methods the bot uses, with Slack's rate limits and size limits.

The real `AsyncWebClient(token, base_url=fake.api_url)` talks to this in-process aiohttp server, so the
wire format is the real one: JSON bodies for chat.postMessage/update/postEphemeral and views.publish,
form or query parameters for the rest, `Authorization: Bearer` (or a `token` form field), HTTP Basic auth
for oauth.v2.access. Answers are HTTP 200 with `{"ok": ...}`, or 429 + `Retry-After` when rate limited.
Each method wants the scopes Slack documents (METHOD_SCOPES): a token without them gets `missing_scope`.
Files people share (`add_file`) are served at their url_private like files.slack.com serves them.

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
import mimetypes
import re
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

WINDOW = 60.0  # Slack's per-minute tiers behave like a sliding minute
MAX_BLOCKS = 50
MAX_HOME_BLOCKS = 100
MAX_SECTION_CHARS = 3000
# What a token installed from this project's manifest.yml is granted (add_workspace's default).
MANIFEST_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,groups:history,chat:write,commands,files:read,"
    "files:write,im:history,im:read,im:write,mpim:history,users:read"
)
# The bot-token scopes each method accepts (any one will do), from the methods' pages on docs.slack.dev.
# A string instead names a family of scopes that depends on the conversation's type ("history" for
# conversations.replies: channels:history in a public channel, groups:history in a private one,
# im:history in a DM, mpim:history in a group DM). A token without them gets missing_scope.
METHOD_SCOPES: dict[str, tuple[str, ...] | str] = {
    "auth.test": (),
    "oauth.v2.access": (),
    "views.publish": (),
    "views.open": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.startStream": ("chat:write",),
    "chat.appendStream": ("chat:write",),
    "chat.stopStream": ("chat:write",),
    # Since 2026-03 either scope; Slack says assistant:write will stop being accepted.
    "assistant.threads.setStatus": ("chat:write", "assistant:write"),
    "assistant.threads.setSuggestedPrompts": ("assistant:write",),
    "agents.sessions.setStatus": ("chat:write",),
    "conversations.replies": "history",
    "conversations.info": "read",
    "conversations.open": "write",
    "users.info": ("users:read",),
    "files.info": ("files:read",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
}
# Conversation kinds and the prefix of their scopes; the order Slack lists them in a `needed` that names them all.
CHANNEL_KINDS = {"public": "channels", "private": "groups", "mpim": "mpim", "im": "im"}
_OPEN_SCOPES = {"public": "channels:manage", "private": "groups:write", "mpim": "mpim:write", "im": "im:write"}
_FILETYPES = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "gif": "gif",
    "webp": "webp",
    "pdf": "pdf",
    "csv": "csv",
    "txt": "text",
    "md": "markdown",
    "json": "json",
    "py": "python",
    "zip": "zip",
    "docx": "docx",
    "xlsx": "xlsx",
    "html": "html",
}
_PRETTY_TYPES = {"text": "Plain Text", "markdown": "Markdown (raw)", "python": "Python", "binary": "Binary"}
# What files.slack.com serves a download without a usable token: a sign-in page, HTTP 200.
LOGIN_PAGE = (
    '<!DOCTYPE html><html lang="en-US"><head><meta charset="utf-8"><title>Slack</title></head>'
    '<body><div id="page"><h1>Sign in to your workspace</h1><form id="signin_form" method="post">'
    '<input type="email" name="email"><input type="password" name="password">'
    '<button type="submit" id="signin_btn">Sign in</button></form></div></body></html>'
)
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
    (completeUploadExternal); or one a person shared in a message (`FakeSlack.add_file`)."""

    id: str
    team_id: str  # the workspace that sees it (for a Slack Connect file: the one the event went to)
    filename: str
    length: int
    content: bytes | None = None
    title: str = ""
    channel: str | None = None
    message_ts: str | None = None
    mimetype: str = "application/octet-stream"
    filetype: str = "binary"
    user: str = ""
    created: int = 0
    deleted: bool = False
    owner_team: str = ""  # the uploader's workspace: another organisation's for a Slack Connect file
    slack_connect: bool = False
    accessible: bool = True  # a Slack Connect file: whether files.info (and the download) are allowed here
    shared: bool = False  # in a message (an upload once completeUploadExternal shared it)


@dataclass
class Download:
    """One GET of a file's url_private(_download): `served` is "file", "login_page" (no usable token: still
    HTTP 200) or "not_found" (404); `sent` counts the bytes written so far, `done` turns true at the end."""

    file_id: str
    token: str | None
    status: int
    served: str
    path: str
    sent: int = 0
    complete: bool = False  # every byte was written (False when the client stopped early)
    done: bool = False


class SlackError(Exception):
    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        retry_after: int | None = None,
        page: str | None = None,
        extra: dict | None = None,
    ):
        super().__init__(error)
        self.error, self.status, self.retry_after = error, status, retry_after
        self.page = page  # not Slack's JSON but an edge proxy's text/plain error page (a 502/503 in an outage)
        self.extra = extra or {}  # more fields of the error body (missing_scope's `needed` and `provided`)


class FakeSlack:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        update_limit_per_minute: int = 50,
        post_per_channel_per_second: float = 1.0,
        post_burst: int = 3,
        replies_limit_per_minute: int = 1,
        max_markdown_chars: int = 12000,
        max_text_chars: int = 4000,
        replies_page_limit: int = 15,
        stream_starts_per_minute: int = 20,
        stream_appends_per_minute: int = 100,
        stream_stops_per_minute: int = 20,
        stream_timeout: float = 300.0,
        status_per_minute: int = 60,
        sessions_per_minute: int = 50,
    ):
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
        self.downloads: list[Download] = []  # every GET of a file URL, in order
        self.download_chunk_size = 64 * 1024
        self.download_chunk_delay = 0.0  # seconds (real time) between chunks: a slow download
        self.channels: dict[str, str] = {}  # channel id -> "public" | "private" | "im" | "mpim" (add_channel)
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
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.delete": self._delete,
            "conversations.replies": self._replies,
            "conversations.open": self._open,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "files.info": self._files_info,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "oauth.v2.access": self._oauth_access,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "assistant.threads.setStatus": self._set_thread_status,
            "agents.sessions.setStatus": self._set_session_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        app.router.add_post("/response/{id}", self._handle_response_url)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/socket/{id}", self._handle_socket)
        app.router.add_get("/files-pri/{key}/{tail:.+}", self._handle_download)
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

    def add_workspace(
        self,
        team_id: str,
        bot_token: str,
        *,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_name: str = "Acme",
        enterprise_id: str | None = None,
        scopes: str = MANIFEST_SCOPES,
    ) -> None:
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

    def add_user(
        self, team_id: str, user_id: str, *, is_admin: bool = False, is_owner: bool = False, name: str = "someone"
    ) -> None:
        self.users[(team_id, user_id)] = {
            "id": user_id,
            "team_id": team_id,
            "name": name,
            "real_name": name.title(),
            "deleted": False,
            "is_admin": is_admin,
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
            "tz": "Europe/London",
            "profile": {"real_name": name.title(), "display_name": name, "team": team_id},
        }

    def add_history(self, channel: str, thread_ts: str, messages: list[dict]) -> None:
        """Messages of a thread as Slack returns them (the parent has ts == thread_ts); any order."""
        self._history[(channel, thread_ts)].extend(messages)

    def add_channel(self, channel_id: str, kind: str) -> None:
        """Tell the fake a conversation's type: "public", "private", "im" or "mpim" (a group DM). Without it the
        id decides: C... public, G... private, D... a DM (conversations.open registers the group DMs it opens)."""
        if kind not in CHANNEL_KINDS:
            raise ValueError(f"kind must be one of {sorted(CHANNEL_KINDS)}")
        self.channels[channel_id] = kind

    def channel_kind(self, channel_id: str) -> str:
        if channel_id in self.channels:
            return self.channels[channel_id]
        return {"G": "private", "D": "im"}.get(channel_id[:1], "public")

    def add_file(
        self,
        team_id: str,
        *,
        name: str,
        mimetype: str,
        content: bytes,
        filetype: str | None = None,
        title: str | None = None,
        user: str = "U0001",
        channel: str | None = None,
        slack_connect: bool = False,
        accessible: bool = True,
        owner_team: str = "TEXTERNAL",
    ) -> dict:
        """A file someone shared in a message of `team_id`; returns the object Slack puts in the event's `files[]`.

        Its url_private / url_private_download are served by this fake (start it first). `slack_connect`: shared
        from another organisation; the event then carries only `{"id", "mode": "file_access", "file_access":
        "check_file_info", ...}` and the app must call files.info, which answers `access_denied` unless
        `accessible`; `owner_team` is the other organisation's workspace, named in the file's URLs."""
        if not self.port:
            raise RuntimeError("start the fake before adding files: their URLs name its port")
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        file = File(
            f"F{next(self._file_ids):08d}",
            team_id,
            name,
            len(content),
            bytes(content),
            title or name,
            channel,
            mimetype=mimetype,
            filetype=filetype or _FILETYPES.get(extension, extension or "binary"),
            user=user,
            created=int(time.time()),
            owner_team=owner_team if slack_connect else team_id,
            slack_connect=slack_connect,
            accessible=accessible,
        )
        file.shared = True
        self.files[file.id] = file
        if slack_connect:
            return {
                "id": file.id,
                "mode": "file_access",
                "file_access": "check_file_info",
                "created": 0,
                "timestamp": 0,
                "user": "",
            }
        return self._file_json(file)

    def delete_file(self, file_id: str) -> None:
        """Someone deleted the file: downloads answer 404, files.info `file_deleted`."""
        self.files[file_id].deleted = True

    def file_share_event(
        self,
        files: list[dict],
        *,
        channel: str,
        user: str = "U0001",
        text: str = "",
        thread_ts: str | None = None,
        team_id: str | None = None,
        mention: bool = False,
    ) -> dict:
        """The event of a message that shares `files` (objects add_file returned): a `message` with subtype
        `file_share`, or with `mention` the `app_mention` Slack sends when the message also names the bot."""
        ts = self._next_ts()
        event: dict[str, Any] = {
            "type": "app_mention" if mention else "message",
            "text": text,
            "files": files,
            "upload": True,
            "user": user,
            "display_as_bot": False,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
        }
        if not mention:
            event["subtype"] = "file_share"
            kind = self.channel_kind(channel)
            event["channel_type"] = {"public": "channel", "private": "group"}.get(kind, kind)
        if thread_ts:
            event["thread_ts"] = thread_ts
        if team_id:
            event["team"] = team_id
        return event

    def add_oauth_code(
        self,
        code: str,
        team_id: str,
        *,
        bot_token: str | None = None,
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        team_name: str = "Acme",
        enterprise_id: str | None = None,
        user_id: str = "U0001",
        app_id: str = "A0001",
        user_token: str | None = None,
        scope: str = MANIFEST_SCOPES,
        user_scope: str = "",
        org_wide: bool = False,
        rotating: bool = False,
        expires_in: int = 43200,
    ) -> None:
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
            "ok": True,
            "app_id": app_id,
            "authed_user": authed_user,
            "scope": scope,
            "token_type": "bot",
            "access_token": bot_token or f"xoxb-{team_id}-{zlib.crc32(code.encode()):010d}",
            "bot_user_id": bot_user_id,
            "team": None if org_wide else {"id": team_id, "name": team_name},
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

    def inject(
        self, method: str, error: str, *, count: int = 1, retry_after: int = 1, status: int | None = None
    ) -> None:
        """The next `count` calls of `method` fail; "ratelimited" answers 429 + Retry-After like Slack."""
        status = status or (429 if error == "ratelimited" else 200)
        self._faults[method].extend([(error, status, retry_after)] * count)

    def inject_outage(
        self,
        method: str,
        *,
        status: int = 503,
        count: int = 1,
        page: str = "upstream connect error or disconnect/reset before headers",
    ) -> None:
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
        return {
            "type": "agent_session_stopped",
            "channel": channel,
            "thread_ts": thread_ts,
            "user": user,
            "streaming_message_ts": stopped,
            "event_ts": self._next_ts(),
        }

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
        found = [
            m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts and not m.deleted
        ]
        return sorted(found, key=lambda m: float(m.ts))

    def channel_messages(self, channel: str) -> list[Message]:
        """Every message the bot has in the channel, threads included, deleted ones too, in ts order."""
        return sorted((m for m in self.messages.values() if m.channel == channel), key=lambda m: float(m.ts))

    def visible_markdown(self, message: Message) -> str:
        blocks = message.blocks or []
        markdown = [b.get("text", "") for b in blocks if b.get("type") == "markdown"]
        if markdown:
            return "".join(markdown)
        sections = [
            b["text"].get("text", "") for b in blocks if b.get("type") == "section" and isinstance(b.get("text"), dict)
        ]
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

    async def socket_send(
        self,
        payload: dict,
        *,
        type: str = "events_api",
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = False,
    ) -> str:
        """Deliver `payload` to the connected client in a Socket Mode envelope, as Slack does; returns its
        envelope_id (the client must ack it: see `socket_acks` and `wait_for_ack`)."""
        connection = await self.wait_for_socket()
        envelope_id = f"{next(self._envelope_ids):08d}-fake-{connection.id}"
        await connection.ws.send_json(
            {
                "envelope_id": envelope_id,
                "type": type,
                "payload": payload,
                "accepts_response_payload": accepts_response_payload,
                "retry_attempt": retry_attempt,
                "retry_reason": retry_reason,
            }
        )
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
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": open_count,
                    "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
                    "connection_info": {"app_id": ticket[1]},
                }
            )
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
            if workspace is not None:
                self._check_scopes(method, workspace, params)
            body = self._methods[method](workspace, params, now)
            status, headers = 200, {}
        except SlackError as failure:
            if failure.page is not None:
                self.calls.append(
                    Call(
                        method,
                        params,
                        workspace.team_id if workspace else None,
                        now,
                        failure.status,
                        {"page": failure.page},
                        token,
                    )
                )
                return web.Response(status=failure.status, text=failure.page, content_type="text/plain")
            body, status = {"ok": False, "error": failure.error, **failure.extra}, failure.status
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        team_id = workspace.team_id if workspace else None
        if method == "oauth.v2.access" and body.get("ok"):
            team_id = (body["team"] or body["enterprise"])["id"]  # the install it answered belongs to that workspace
        self.calls.append(Call(method, params, team_id, now, status, body, token))
        if workspace is not None:
            headers["x-oauth-scopes"] = workspace.scopes
            accepted = self._accepted_scopes(method, params)
            if accepted:
                headers["x-accepted-oauth-scopes"] = ",".join(accepted)
        return web.json_response(body, status=status, headers=headers)

    def _accepted_scopes(self, method: str, params: dict) -> tuple[str, ...]:
        """The scopes `method` accepts for these arguments, any one of them (see METHOD_SCOPES)."""
        scopes = METHOD_SCOPES.get(method, ())
        if not isinstance(scopes, str):
            return scopes
        if scopes == "write":  # conversations.open: a DM, a group DM, or an existing conversation by id
            users = [u for u in str(params.get("users") or "").split(",") if u]
            if params.get("channel"):
                return (_OPEN_SCOPES[self.channel_kind(str(params["channel"]))],)
            return ("mpim:write",) if len(users) > 1 else ("im:write",)
        channel = params.get("channel")
        kinds = [self.channel_kind(str(channel))] if channel else list(CHANNEL_KINDS)
        return tuple(f"{CHANNEL_KINDS[kind]}:{scopes}" for kind in kinds)

    def _check_scopes(self, method: str, ws: Workspace, params: dict) -> None:
        """Slack's answer to a token without the method's scope: HTTP 200, missing_scope, needed and provided."""
        accepted = self._accepted_scopes(method, params)
        granted = {scope.strip() for scope in ws.scopes.split(",") if scope.strip()}
        if accepted and not granted.intersection(accepted):
            raise SlackError("missing_scope", extra={"needed": ",".join(accepted), "provided": ws.scopes})

    # -- files -----------------------------------------------------------------------------------------

    def _file_urls(self, file: File) -> tuple[str, str]:
        key = f"{file.owner_team or file.team_id}-{file.id}"
        url_name = quote(re.sub(r"\s+", "_", file.filename.strip().lower()))
        base = f"http://127.0.0.1:{self.port}/files-pri/{key}"
        return f"{base}/{url_name}", f"{base}/download/{url_name}"

    def _file_json(self, file: File, *, info: bool = False) -> dict:
        """The file object of a message event's `files[]`; with `info`, files.info's (with where it is shared)."""
        private, download = self._file_urls(file)
        workspace = self.workspaces.get(file.team_id)
        domain = (workspace.team_name if workspace else "acme").lower().replace(" ", "-")
        url_name = private.rsplit("/", 1)[-1]
        kind = self.channel_kind(file.channel) if file.channel else None
        body = {
            "id": file.id,
            "created": file.created,
            "timestamp": file.created,
            "name": file.filename,
            "title": file.title or file.filename,
            "mimetype": file.mimetype,
            "filetype": file.filetype,
            "pretty_type": _PRETTY_TYPES.get(file.filetype, file.filetype.upper()),
            "user": file.user,
            "user_team": file.owner_team or file.team_id,
            "editable": False,
            "size": file.length,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": kind == "public",
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": private,
            "url_private_download": download,
            "media_display_type": "unknown",
            "permalink": f"https://{domain}.slack.com/files/{file.user}/{file.id}/{url_name}",
            "permalink_public": f"https://slack-files.com/{file.owner_team or file.team_id}-{file.id}-"
            f"{zlib.crc32(file.id.encode()):010x}",
            "is_starred": False,
            "has_rich_preview": False,
            "file_access": "visible",
        }
        if info:
            shares: dict = {}
            listed: dict[str, list[str]] = {"channels": [], "groups": [], "ims": []}
            if file.channel and kind:
                visibility = "public" if kind == "public" else "private"
                shares[visibility] = {
                    file.channel: [
                        {
                            "reply_users": [],
                            "reply_users_count": 0,
                            "reply_count": 0,
                            "ts": file.message_ts or f"{file.created}.000100",
                            "share_user_id": file.user,
                            "team_id": file.team_id,
                        }
                    ]
                }
                listing = {"public": "channels", "private": "groups", "mpim": "groups", "im": "ims"}[kind]
                listed[listing].append(file.channel)
            body.update({"comments_count": 0, "shares": shares, **listed, "has_more_shares": False})
        return body

    def _files_info(self, ws: Workspace, params: dict, now: float) -> dict:
        file = self.files.get(str(params.get("file") or ""))
        if file is None or file.team_id != ws.team_id or not file.shared:
            raise SlackError("file_not_found")
        if file.deleted:
            raise SlackError("file_deleted")
        if file.slack_connect and not file.accessible:
            raise SlackError("access_denied")  # "Unable to access the file (slack connect)"
        return {
            "ok": True,
            "file": self._file_json(file, info=True),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        """url_private(_download): the bytes for a bot token of the file's workspace that has files:read; any
        other request gets the sign-in page with HTTP 200, as files.slack.com does; a deleted file 404."""
        file_id = request.match_info["key"].rsplit("-", 1)[-1]
        file = self.files.get(file_id)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        token = credentials if scheme.lower() == "bearer" and credentials else None
        if (
            file is None
            or file.deleted
            or not file.shared
            or request.match_info["key"] != (f"{file.owner_team or file.team_id}-{file.id}")
        ):
            self.downloads.append(Download(file_id, token, 404, "not_found", request.path, done=True))
            return web.Response(status=404, text="Not Found")
        workspace = self.workspaces.get(self._tokens.get(token or "", ""))
        granted = {scope.strip() for scope in workspace.scopes.split(",")} if workspace else set()
        if (
            workspace is None
            or workspace.team_id != file.team_id
            or "files:read" not in granted
            or (file.slack_connect and not file.accessible)
        ):
            self.downloads.append(Download(file_id, token, 200, "login_page", request.path, done=True))
            return web.Response(text=LOGIN_PAGE, content_type="text/html", charset="utf-8")
        record = Download(file_id, token, 200, "file", request.path)
        self.downloads.append(record)
        headers = {"Content-Type": file.mimetype, "Content-Length": str(len(file.content))}
        if "/download/" in request.path:
            headers["Content-Disposition"] = f'attachment; filename="{quote(file.filename)}"'
        response = web.StreamResponse(status=200, headers=headers)
        try:
            await response.prepare(request)
            for start in range(0, len(file.content), self.download_chunk_size):
                chunk = file.content[start : start + self.download_chunk_size]
                await response.write(chunk)
                record.sent += len(chunk)
                if self.download_chunk_delay:
                    await asyncio.sleep(self.download_chunk_delay)
            await response.write_eof()
            record.complete = record.sent == len(file.content)
        except ConnectionError:
            pass  # the client stopped reading: what was sent so far stays recorded
        finally:
            record.done = True
        return response

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
                if (
                    not isinstance(block, dict)
                    or not block.get("type")
                    or (block["type"] == "markdown" and not block.get("text"))
                    or (
                        block["type"] == "section"
                        and len((block.get("text") or {}).get("text", "")) > MAX_SECTION_CHARS
                    )
                ):
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
        body = {
            "type": "message",
            "text": m.text,
            "user": m.user,
            "bot_id": m.bot_id,
            "app_id": "A0001",
            "ts": m.ts,
            "team": m.team_id,
        }
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
        body = {
            "ok": True,
            "url": f"https://{ws.team_name.lower().replace(' ', '-')}.slack.com/",
            "team": ws.team_name,
            "user": "bot",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }
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
        message = Message(
            channel,
            self._next_ts(),
            params.get("thread_ts") or None,
            text,
            blocks or None,
            ws.bot_user_id,
            ws.bot_id,
            ws.team_id,
            markdown_text=params.get("markdown_text"),
        )
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
                if not isinstance(chunk, dict) or chunk.get("type") not in (
                    "markdown_text",
                    "task_update",
                    "plan_update",
                    "blocks",
                ):
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
        message = Message(
            channel,
            self._next_ts(),
            thread_ts,
            "",
            None,
            ws.bot_user_id,
            ws.bot_id,
            ws.team_id,
            markdown_text="",
            streaming=mode or "markdown_text",
            stream_started_at=now,
        )
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
        if blocks is not None and (
            not isinstance(blocks, list)
            or len(blocks) > MAX_BLOCKS
            or not all(isinstance(b, dict) and b.get("type") for b in blocks)
        ):
            raise SlackError("invalid_blocks")
        self._grow(message, mode, text, now)
        message.streaming = None
        if blocks:
            message.blocks = blocks  # rendered under the streamed text
        if params.get("session_status") and message.thread_ts:
            self._session(ws, message.channel, message.thread_ts, params["session_status"], now)
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "message": {**self._message_json(message), "text": message.markdown_text},
        }

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
        self._session(
            ws,
            channel,
            thread_ts,
            params.get("status"),
            now,
            title=params.get("title"),
            initiator_user_id=params.get("initiator_user_id"),
        )
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
        self.suggested_prompts[channel] = {
            "title": params.get("title"),
            "prompts": prompts,
            "thread_ts": params.get("thread_ts"),
        }
        return {"ok": True}

    def _post_ephemeral(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, user = params.get("channel"), params.get("user")
        if not channel or not user:
            raise SlackError("channel_not_found" if not channel else "user_not_found")
        blocks, text = params.get("blocks"), params.get("text") or ""
        if not (text or blocks or params.get("markdown_text")):
            raise SlackError("no_text")
        self._check_content(params, blocks=blocks, text=text)
        ephemeral = Ephemeral(
            channel,
            user,
            text or params.get("markdown_text") or "",
            blocks or None,
            self._next_ts(),
            ws.team_id,
            params.get("thread_ts"),
        )
        self.ephemeral.append(ephemeral)
        return {"ok": True, "message_ts": ephemeral.message_ts}

    def _delete(self, ws: Workspace, params: dict, now: float) -> dict:
        channel, ts = params.get("channel"), params.get("ts")
        self._own_message(ws, channel, ts).deleted = True
        return {"ok": True, "channel": channel, "ts": ts}

    def _replies(self, ws: Workspace, params: dict, now: float) -> dict:
        """A thread, oldest first, a page at a time (Tier 1 and 15 a page for apps outside the Marketplace).

        The first page starts with the parent, which counts towards `limit`; `oldest`/`latest` (exclusive
        unless `inclusive`) narrow the replies. Without `latest` pages run forward from the oldest reply;
        with it (like conversations.history) a page holds the replies nearest `latest`, still oldest first,
        and `next_cursor` leads to the older ones. `next_cursor` is "" and `has_more` false on the last page."""
        self._per_minute((ws.team_id, "conversations.replies"), self.replies_limit_per_minute, now)
        channel, thread_ts = params.get("channel"), params.get("ts")
        if not channel:
            raise SlackError("channel_not_found")
        if not thread_ts:
            raise SlackError("thread_not_found")
        try:
            limit = int(params.get("limit") or 0)
        except (TypeError, ValueError):
            limit = 0
        limit = min(limit, self.replies_page_limit) if limit > 0 else self.replies_page_limit
        ours = [self._message_json(m) for m in self.thread(channel, thread_ts)]
        everything = sorted(self._history[(channel, thread_ts)] + ours, key=lambda m: self._ts_us(m["ts"]))
        parent = [m for m in everything if m["ts"] == thread_ts][:1]
        inclusive = str(params.get("inclusive") or "").lower() in ("1", "true")
        oldest, latest = self._ts_param(params, "oldest"), self._ts_param(params, "latest")

        def in_range(ts: int) -> bool:
            return (oldest is None or ts > oldest or (inclusive and ts == oldest)) and (
                latest is None or ts < latest or (inclusive and ts == latest)
            )

        replies = [m for m in everything if m["ts"] != thread_ts and in_range(self._ts_us(m["ts"]))]
        backwards = latest is not None
        cursor = params.get("cursor")
        if cursor:
            try:
                direction, _, at = base64.b64decode(str(cursor), validate=True).decode().partition(":")
                at_us = int(at)
            except ValueError:
                raise SlackError("invalid_cursor") from None
            if direction != ("prev_ts" if backwards else "next_ts"):
                raise SlackError("invalid_cursor")
            head, room = [], limit
            if backwards:
                replies = [m for m in replies if self._ts_us(m["ts"]) <= at_us]
            else:
                replies = [m for m in replies if self._ts_us(m["ts"]) >= at_us]
        else:
            head, room = parent, limit - len(parent)
        if backwards:
            split = max(0, len(replies) - max(room, 0))
            page, rest = replies[split:], replies[:split]
            following = rest[-1] if rest else None
        else:
            page, rest = replies[: max(room, 0)], replies[max(room, 0) :]
            following = rest[0] if rest else None
        next_cursor = ""
        if following is not None:
            marker = f"{'prev_ts' if backwards else 'next_ts'}:{self._ts_us(following['ts'])}"
            next_cursor = base64.b64encode(marker.encode()).decode()
        return {
            "ok": True,
            "messages": head + page,
            "has_more": following is not None,
            "response_metadata": {"next_cursor": next_cursor},
        }

    @classmethod
    def _ts_param(cls, params: dict, name: str) -> int | None:
        """`oldest` / `latest` in microseconds; Slack answers invalid_ts_oldest / invalid_ts_latest to a bad one."""
        value = params.get(name)
        if value in (None, ""):
            return None
        try:
            return cls._ts_us(str(value))
        except ValueError:
            raise SlackError("invalid_ts_" + name) from None

    @staticmethod
    def _ts_us(ts: str) -> int:
        seconds, _, fraction = str(ts).partition(".")
        if not seconds.isdigit() or (fraction and not fraction.isdigit()):
            raise ValueError(ts)
        return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])

    def _open(self, ws: Workspace, params: dict, now: float) -> dict:
        users = sorted(u for u in str(params.get("users") or "").split(",") if u)
        if not users:
            raise SlackError("users_list_not_supplied")
        # Deterministic ids: U0001's DM is D0001, like the DMs the test harness sends events from.
        channel = f"D{users[0][1:]}" if len(users) == 1 else f"G{zlib.crc32(','.join(users).encode()):08X}"
        if len(users) > 1:
            self.channels.setdefault(channel, "mpim")
        return {"ok": True, "channel": {"id": channel}}

    def _conversations_info(self, ws: Workspace, params: dict, now: float) -> dict:
        """The conversation's type flags, as conversations.info shows them (its kind: add_channel or the id)."""
        channel = str(params.get("channel") or "")
        if not channel:
            raise SlackError("channel_not_found")
        kind = self.channel_kind(channel)
        legacy_group = kind == "private" and channel.startswith("G")  # private channels made before 2021
        body = {
            "id": channel,
            "created": 1700000000,
            "is_archived": False,
            "is_org_shared": False,
            "context_team_id": ws.team_id,
            "is_channel": kind in ("public", "private") and not legacy_group,
            "is_group": legacy_group,
            "is_im": kind == "im",
            "is_mpim": kind == "mpim",
            "is_private": kind != "public",
        }
        if kind == "im":
            body.update(user=f"U{channel[1:]}", is_user_deleted=False)
        else:
            body.update(
                name=f"mpdm-{channel.lower()}-1" if kind == "mpim" else channel.lower(),
                is_general=False,
                is_shared=False,
                is_ext_shared=False,
                is_member=True,
            )
        return {"ok": True, "channel": body}

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
            message = Message(
                channel,
                self._next_ts(),
                params.get("thread_ts") or None,
                text,
                None,
                ws.bot_user_id,
                ws.bot_id,
                ws.team_id,
            )
            message.states.append((now, text, None))
            self.messages[f"{channel}:{message.ts}"] = message
            ts = message.ts
        for upload, title in uploads:
            upload.title, upload.channel, upload.message_ts = title, channel or "", ts
            extension = upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else ""
            upload.user, upload.created, upload.shared = ws.bot_user_id, int(time.time()), True
            upload.mimetype = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
            upload.filetype = _FILETYPES.get(extension, extension or "binary")
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
        opened = {
            "id": f"V{len(self.modals) + 1:08d}M",
            "team_id": ws.team_id,
            "type": "modal",
            "blocks": blocks,
            "title": view["title"],
            "submit": view.get("submit"),
            "close": view.get("close"),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{now:.6f}",
            "app_id": "A0001",
            "bot_id": ws.bot_id,
            "trigger_id": trigger,
        }
        self.modals.append(opened)
        return {"ok": True, "view": opened}

    def _views_publish(self, ws: Workspace, params: dict, now: float) -> dict:
        user_id, view = params.get("user_id"), params.get("view")
        if not user_id or not isinstance(view, dict) or view.get("type") != "home":
            raise SlackError("invalid_arguments")
        if len(view.get("blocks") or []) > MAX_HOME_BLOCKS:
            raise SlackError("invalid_blocks")
        view_id = f"V{zlib.crc32(f'{ws.team_id}:{user_id}'.encode()):08X}"
        published = {
            "id": view_id,
            "team_id": ws.team_id,
            "type": "home",
            "blocks": view.get("blocks") or [],
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{now:.6f}",
            "app_id": "A0001",
            "bot_id": ws.bot_id,
        }
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
        self.add_workspace(
            team["id"],
            payload["access_token"],
            bot_user_id=payload["bot_user_id"],
            bot_id=self._oauth_bot_ids.pop(code),
            team_name=team["name"],
            enterprise_id=(payload["enterprise"] or {}).get("id"),
            scopes=payload["scope"],
        )
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
            "ok": True,
            "app_id": previous["app_id"],
            "scope": previous["scope"],
            "token_type": "bot",
            "access_token": access_token,
            "bot_user_id": previous["bot_user_id"],
            "refresh_token": "",
            "expires_in": self.token_expires_in,
            "team": previous["team"],
            "enterprise": previous["enterprise"],
            "is_enterprise_install": previous["is_enterprise_install"],
        }
        payload["refresh_token"] = self._new_refresh_token(payload, grant["bot_id"])
        self._expired_tokens.add(previous["access_token"])
        self.add_workspace(
            team["id"],
            access_token,
            bot_user_id=workspace.bot_user_id,
            bot_id=workspace.bot_id,
            team_name=workspace.team_name,
            enterprise_id=workspace.enterprise_id,
            scopes=workspace.scopes,
        )
        return dict(payload)
