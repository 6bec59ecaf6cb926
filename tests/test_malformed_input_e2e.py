"""Whatever arrives at /slack/events: unsigned gets 401 before anything is parsed, signed but malformed gets
400, never a 500 or a traceback; odd button values and `/credits buy` arguments are answered in time."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from billing.tables import credit_accounts
from tests.harness import TEAM, new_ts

UNSIGNED_BODIES = [
    ('{"a":', "application/json"),
    ("[1]", "application/json"),
    ("payload=%7Bx", "application/x-www-form-urlencoded"),
    ("\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "text/plain"),
    ("", "application/json"),
]

SIGNED_MALFORMED = [
    ('{"a":', "application/json"),
    ("[1]", "application/json"),
    ('"just a string"', "application/json"),
    ("payload=%7Bx", "application/x-www-form-urlencoded"),
    ("payload=%5B1%5D", "application/x-www-form-urlencoded"),
    (
        json.dumps({"type": "event_callback", "team_id": TEAM, "event_id": "Ev1", "event": "a string"}),
        "application/json",
    ),
    (json.dumps({"type": "event_callback", "team_id": TEAM, "event_id": "Ev2", "event": [1, 2]}), "application/json"),
    (
        json.dumps(
            {
                "type": "event_callback",
                "team_id": TEAM,
                "event_id": "Ev3",
                "event": {"type": "app_mention"},
                "authorizations": "nope",
            }
        ),
        "application/json",
    ),
    (
        urlencode({"payload": json.dumps({"type": "block_actions", "team": "T0001", "user": {"id": "U1"}})}),
        "application/x-www-form-urlencoded",
    ),
    (
        urlencode(
            {
                "payload": json.dumps(
                    {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": "U1"}, "actions": ["x"]}
                )
            }
        ),
        "application/x-www-form-urlencoded",
    ),
    # Types Bolt would choke on while building its context, in events and in interactivity (form or JSON).
    (
        json.dumps(
            {"type": "event_callback", "team_id": TEAM, "event": {"type": "app_mention"}, "authorizations": [1]}
        ),
        "application/json",
    ),
    (
        json.dumps(
            {
                "type": "event_callback",
                "team_id": TEAM,
                "event": {"type": "app_mention", "channel": 123, "user": "U1", "ts": "1.1"},
            }
        ),
        "application/json",
    ),
    (json.dumps({"type": "event_callback", "team": 5, "event": {"type": "app_mention"}}), "application/json"),
    (
        json.dumps({"type": "event_callback", "enterprise": ["E1"], "event": {"type": "app_mention"}}),
        "application/json",
    ),
    (json.dumps({"type": "event_callback", "team_id": {"a": 1}, "event": {"type": "app_mention"}}), "application/json"),
    (json.dumps({"type": "event_callback", "team_id": TEAM, "response_urls": 5, "event": {}}), "application/json"),
    (
        json.dumps({"type": "block_actions", "team": {"id": TEAM}, "user": 5, "actions": [{"action_id": "x"}]}),
        "application/json",
    ),
    (
        urlencode(
            {
                "payload": json.dumps(
                    {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": "U1"}, "actions": []}
                )
            }
        ),
        "application/x-www-form-urlencoded",
    ),
    (
        urlencode(
            {
                "payload": json.dumps(
                    {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": "U1"}, "actions": [{"value": "500"}]}
                )
            }
        ),
        "application/x-www-form-urlencoded",
    ),
    (
        urlencode(
            {
                "payload": json.dumps(
                    {
                        "type": "block_actions",
                        "team": {"id": TEAM},
                        "user": "U1",
                        "actions": [{"action_id": "buy_credits_500", "value": "500"}],
                    }
                )
            }
        ),
        "application/x-www-form-urlencoded",
    ),
    (json.dumps({"command": "/credits", "team_id": TEAM, "user_id": "U1", "text": ["buy"]}), "application/json"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "application/json"),
    ('{"type": "event_callback", "team_id": "\\udcff", "event": {"type": "app_mention"}}', "application/json"),
]


def no_tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("body,content_type", UNSIGNED_BODIES)
async def test_unsigned_bodies_are_refused_before_they_are_parsed(start_bot_on_sqlite, caplog, body, content_type):
    h = await start_bot_on_sqlite()
    headers = {"Content-Type": content_type}
    async with h.http.post(f"{h.url}/slack/events", data=body.encode("latin-1"), headers=headers) as response:
        assert response.status == 401
    # Signed with another secret, or with a timestamp that is not a number: refused the same way.
    status, _ = await h.post_signed(body, content_type, secret="not-the-signing-secret")
    assert status == 401
    async with h.http.post(
        f"{h.url}/slack/events",
        data=body.encode("latin-1"),
        headers={**headers, "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    ) as response:
        assert response.status == 401
    assert no_tracebacks(caplog) == []
    assert h.slack.calls_to("chat.postMessage") == [] and h.claude.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Signature": "v0=é"},  # slack_sdk's verifier would compare non-ASCII text
        {"X-Slack-Request-Timestamp": "9" * 5000},  # int() refuses strings over 4,300 digits
        {"X-Slack-Request-Timestamp": "-1"},
    ],
)
async def test_odd_signature_headers_are_refused_without_a_traceback(start_bot_on_sqlite, caplog, headers):
    h = await start_bot_on_sqlite()
    body = json.dumps({"type": "event_callback", "team_id": TEAM, "event": {"type": "app_mention"}})
    base = h.signed_headers(body)
    async with h.http.post(
        f"{h.url}/slack/events", data=body.encode(), headers={"Content-Type": "application/json", **base, **headers}
    ) as response:
        assert response.status == 401
    assert no_tracebacks(caplog) == []


@pytest.mark.parametrize("body,content_type", SIGNED_MALFORMED)
async def test_signed_but_malformed_bodies_get_400_and_no_traceback(start_bot_on_sqlite, caplog, body, content_type):
    h = await start_bot_on_sqlite()
    status, _ = await h.post_signed(body, content_type)
    assert status == 400
    assert no_tracebacks(caplog) == []
    assert h.slack.calls == [] and h.claude.requests == []


@pytest.mark.parametrize("value", ["abc", "1e3", "²", "-5", "", "9" * 40])
async def test_a_buy_button_with_a_value_that_is_no_pack_is_answered(start_bot_on_sqlite, caplog, value):
    h = await start_bot_on_sqlite()
    status, _ = await h.click("buy_credits_500", value)
    assert status == 200
    await h.responses(1, timeout=3)
    assert "There is no pack of" in h.last_response()["text"]
    assert h.stripe.sessions == {}
    assert no_tracebacks(caplog) == []


@pytest.mark.parametrize("argument", ["²", "abc", "1e3", "500 2000", "-500"])
async def test_credits_buy_with_an_argument_that_is_no_pack_is_answered_at_once(start_bot_on_sqlite, caplog, argument):
    h = await start_bot_on_sqlite()
    status, ack = await h.command("/credits", f"buy {argument}")
    assert status == 200
    assert "There is no pack of" in ack["text"]
    assert h.stripe.sessions == {}
    assert no_tracebacks(caplog) == []


async def test_single_workspace_mode_ignores_other_workspaces(start_bot_on_sqlite, caplog):
    h = await start_bot_on_sqlite()
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        sent = await h.mention("answer me, on someone else's credits", team="TOTHER")
        assert sent.status == 200
    status, body = await h.command("/credits", team="TOTHER")
    assert status == 200 and not body
    await h.idle()
    assert h.slack.calls_to("chat.postMessage") == [] and h.claude.requests == []
    assert (await h.services.credits.balance("TOTHER")).balance == 0
    async with h.services.engine.connect() as connection:
        teams = (await connection.execute(sa.select(credit_accounts.c.team_id))).scalars().all()
    assert "TOTHER" not in teams, "no account is opened for another workspace"
    logged = [r.getMessage() for r in caplog.records if "TOTHER" in r.getMessage()]
    assert len(logged) == 1, "logged once per team"
    # The token's own workspace is served as usual.
    sent = await h.mention("and me?")
    await h.idle()
    assert h.reply_text("C0001", sent.ts) == "You said: and me?"


async def test_a_command_from_a_channel_whose_name_says_payload_is_answered(start_bot_on_sqlite):
    """Bolt alone reads any form containing the word "payload" as an interactivity payload (and so as empty)."""
    h = await start_bot_on_sqlite()
    form = {
        "token": "legacy",
        "team_id": TEAM,
        "team_domain": "acme",
        "channel_id": "C0001",
        "channel_name": "payloads",
        "user_id": "U0001",
        "user_name": "payload",
        "command": "/credits",
        "text": "",
        "api_app_id": "A0001",
        "response_url": h.response_url(),
        "trigger_id": "trig-payload",
    }
    status, body = await h.post_signed(urlencode(form), "application/x-www-form-urlencoded")
    assert status == 200
    assert "credits available" in json.loads(body)["text"]


async def test_an_error_page_from_slacks_edge_is_retried_like_any_outage(start_bot_on_sqlite, caplog):
    h = await start_bot_on_sqlite()
    h.slack.inject_outage("chat.postMessage", status=503, count=2)
    sent = await h.mention("still there?")
    await h.idle(timeout=30)
    assert h.reply_text("C0001", sent.ts) == "You said: still there?"
    assert [c.status for c in h.slack.calls_to("chat.postMessage")] == [503, 503, 200]
    assert no_tracebacks(caplog) == []


async def test_events_carry_numbers_where_slack_puts_numbers(start_bot_on_sqlite, caplog):
    """An unfurled link's attachment has `"id": 1` (and old ones a numeric `ts`): the question is answered."""
    h = await start_bot_on_sqlite()
    ts = new_ts()
    event = {
        "type": "message",
        "channel_type": "im",
        "user": "U0001",
        "text": "what is at https://example.com",
        "ts": ts,
        "channel": "D0001",
        "event_ts": ts,
        "team": TEAM,
        "attachments": [{"id": 1, "ts": 1700000000, "title": "Example", "from_url": "https://example.com"}],
        "blocks": [{"type": "rich_text", "block_id": "b1", "elements": []}],
        "metadata": {"event_payload": {"n_id": 5}},
    }
    sent = await h.send_event(event)
    assert sent.status == 200
    await h.idle()
    assert h.reply_text("D0001", None) == "You said: what is at https://example.com"
    assert no_tracebacks(caplog) == []
