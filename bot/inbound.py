"""What comes in on /slack/events is checked before Bolt sees it: signed, then well formed.

Bolt parses a body before it verifies the signature, and builds its context from whatever types the
body holds, so an unsigned body that is not JSON, or a signed one with a number where Slack sends a
string, would make it fail with a traceback. Here:

1. the signature is verified first, on the raw bytes, with slack_sdk's verifier (its inputs checked
   first: it fails on a non-ASCII signature or a 5,000-digit timestamp): anything unsigned, stale or
   forged gets 401, with nothing parsed;
2. the body must be one of Slack's payloads (an event or a JSON `payload` form, or a slash command
   form), with the types Slack sends where Bolt and the listeners read: ids, ts's and types strings,
   team/user/channel a string or an object, `authorizations` and `actions` lists of objects. Anything
   else gets 400;
3. Bolt gets the parsed payload as JSON. (Bolt reads any form whose text merely contains "payload",
   such as a command sent from #payloads, as an empty body; and it need not verify again: step 1 did.)
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

MAX_TIMESTAMP_DIGITS = 12
# What Bolt (building its context) and the listeners read, and so must have Slack's types. Only these
# objects are checked: the rest of a payload (attachments, blocks, metadata) is Slack's business, and
# carries numbers where these carry strings (an attachment's `"id": 1`).
STRING_KEYS = {
    "type",
    "subtype",
    "ts",
    "thread_ts",
    "event_ts",
    "message_ts",
    "text",
    "value",
    "action_id",
    "block_id",
    "id",
    "team_id",
    "user_id",
    "channel_id",
    "enterprise_id",
    "api_app_id",
    "event_id",
    "trigger_id",
    "response_url",
    "user_team",
    "context_team_id",
    "context_enterprise_id",
    "app_installed_team_id",
    "function_execution_id",
    "execution_id",
    "bot_access_token",
    "bot_id",
    "command",
    "channel_type",
    "tab",
    "hash",
}
ID_OR_OBJECT_KEYS = {"team", "user", "channel", "enterprise"}  # a string in events, an object in payloads
CHILD_OBJECTS = {
    "event",
    "item",
    "assistant_thread",
    "message",
    "previous_message",
    "view",
    "container",
    "function_data",
}
CHILD_LISTS = {"authorizations", "actions", "response_urls"}
MAX_DEPTH = 4
# Interactivity payloads, where the user, team and channel are objects.
INTERACTIVE = {"block_actions", "view_submission", "view_closed", "shortcut", "message_action", "block_suggestion"}


class Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> web.Response:
        return web.json_response({"ok": False, "error": self.reason}, status=self.status)


class SlackRequestGate:
    def __init__(self, signing_secret: str):
        self._verifier = SignatureVerifier(signing_secret)

    async def admit(self, request: web.Request) -> AsyncBoltRequest:
        """The request as Bolt wants it; raises Refused (401 or 400) with nothing parsed or done."""
        try:
            raw = await request.read()
        except (ConnectionError, web.HTTPException):
            raise Refused(400, "incomplete_body") from None
        if not self._signed(
            raw, request.headers.get("X-Slack-Request-Timestamp", ""), request.headers.get("X-Slack-Signature", "")
        ):
            raise Refused(401, "invalid_signature")
        payload = parse_payload(raw.decode("utf-8"), request.content_type)
        try:  # a lone surrogate ("\udcff") is valid JSON but no text: it could be neither logged nor stored
            body = json.dumps(payload, ensure_ascii=False)
            body.encode("utf-8")
        except UnicodeEncodeError:
            raise Refused(400, "invalid_text") from None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-type", "content-length")}
        return AsyncBoltRequest(
            body=body, query=request.query_string, headers={**headers, "Content-Type": "application/json"}
        )

    def _signed(self, raw: bytes, timestamp: str, signature: str) -> bool:
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_TIMESTAMP_DIGITS):
            return False
        if not signature.isascii():
            return False
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self._verifier.is_valid(text, timestamp, signature)


def parse_payload(text: str, content_type: str) -> dict:
    """The payload Slack sent, checked for shape (see the module docstring); raises Refused(400)."""
    if content_type == "application/json" or text.lstrip().startswith("{"):
        payload = _json_object(text)
    else:
        form = dict(parse_qsl(text, keep_blank_values=True))
        if "payload" in form:
            payload = _json_object(form["payload"])
        elif form.get("command") or form.get("ssl_check"):
            payload = form  # a slash command (or Slack's SSL check): every value is a string already
        else:
            raise Refused(400, "invalid_form")
    _check_types(payload, depth=0)
    kind = payload.get("type")
    if kind == "event_callback" and not isinstance(payload.get("event"), dict):
        raise Refused(400, "invalid_event")
    if kind == "block_actions" and not (
        payload.get("actions") and all(isinstance(action.get("action_id"), str) for action in payload["actions"])
    ):
        raise Refused(400, "invalid_actions")
    if kind in INTERACTIVE and not all(
        isinstance(payload.get(key), dict | None) for key in ("user", "team", "channel")
    ):
        raise Refused(400, "invalid_payload")
    if "command" in payload and not all(isinstance(value, str) for value in payload.values()):
        raise Refused(400, "invalid_command")  # a slash command is a form: strings only
    return payload


def _json_object(text: str) -> dict:
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(400, "invalid_json") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_json")
    return body


def _check_types(value: dict, *, depth: int) -> None:
    """Raise Refused(400) unless every key Bolt or the listeners read has the type Slack sends."""
    if depth > MAX_DEPTH:
        return
    for key, item in value.items():
        if item is None:
            continue
        if key in ID_OR_OBJECT_KEYS:
            if isinstance(item, dict):
                if not isinstance(item.get("id", ""), str | None):
                    raise Refused(400, f"invalid_{key}")
                _check_types(item, depth=depth + 1)
            elif not isinstance(item, str):
                raise Refused(400, f"invalid_{key}")
        elif key in CHILD_OBJECTS:
            if not isinstance(item, dict):
                raise Refused(400, f"invalid_{key}")
            _check_types(item, depth=depth + 1)
        elif key in CHILD_LISTS:
            if not isinstance(item, list) or not all(isinstance(entry, dict) for entry in item):
                raise Refused(400, f"invalid_{key}")
            for entry in item:
                _check_types(entry, depth=depth + 1)
        elif key in STRING_KEYS and not isinstance(item, str):
            raise Refused(400, f"invalid_{key}")
