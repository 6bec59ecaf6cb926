"""What comes in on /slack/events is checked before Bolt sees it: signed, then well formed.

Bolt parses a body before it verifies the signature, so an unsigned body that is not JSON or a form
would make it fail with a traceback. Here the signature is verified on the raw bytes first (401 for
anything unsigned, stale or forged: nothing is parsed), then the body must have the shape of one of
Slack's payloads (400 otherwise). Only then is it handed to Bolt, which verifies it again.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)


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
        raw = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(401, "invalid_signature") from None
        if not timestamp.isascii() or not timestamp.isdigit() or not self._verifier.is_valid(text, timestamp, signature):
            raise Refused(401, "invalid_signature")
        check_shape(text, request.content_type)
        return AsyncBoltRequest(body=text, query=request.query_string, headers=dict(request.headers))


def check_shape(text: str, content_type: str) -> None:
    """Raise Refused(400) unless `text` is an event (JSON object), or a form with a command or a JSON `payload`."""
    if content_type == "application/json" or text.startswith("{"):
        body = _json_object(text)
        if body.get("type") == "event_callback":
            if not isinstance(body.get("event"), dict):
                raise Refused(400, "invalid_event")
            if not isinstance(body.get("authorizations", []), list):
                raise Refused(400, "invalid_event")
        return
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in form:
        payload = _json_object(form["payload"])
        for name in ("team", "user", "container", "view", "channel"):
            if name in payload and not isinstance(payload[name], dict | None):
                raise Refused(400, "invalid_payload")
        if not isinstance(payload.get("actions", []), list) or not all(
            isinstance(action, dict) for action in payload.get("actions", [])
        ):
            raise Refused(400, "invalid_payload")
    elif not form and text:
        raise Refused(400, "invalid_form")


def _json_object(text: str) -> dict:
    try:
        body = json.loads(text)
    except ValueError:
        raise Refused(400, "invalid_json") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_json")
    return body
