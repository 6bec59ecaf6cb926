"""Spending limits in the Home tab (admins only): the list, and a modal that sets or removes one limit.

The modal asks whose limit (a person, a channel, or everyone without their own), picks the person or
channel with Slack's own selects, and takes the amount as the command does (`200/day`, `1000/month`, `off`).
"""

from __future__ import annotations

from dataclasses import dataclass

from billing import SpendingLimit
from bot.surfaces.limits import describe, parse_amount

EDIT_ACTION = "edit_limits"
MODAL_CALLBACK = "spending_limits"
SCOPE_LABELS = {"user": "A person", "channel": "A channel", "default": "Everyone without a limit of their own"}


def home_limit_blocks(found: list[tuple[SpendingLimit, int | None]]) -> list[dict]:
    lines = [describe(limit, used) for limit, used in found] or ["No spending limits are set."]
    text = "*Spending limits* (admins; calendar days and months in UTC)\n" + "\n".join(lines)
    return [
        {
            "type": "section",
            "block_id": "spending_limits",
            "text": {"type": "mrkdwn", "text": text},
            "accessory": {
                "type": "button",
                "action_id": EDIT_ACTION,
                "value": "edit",
                "text": {"type": "plain_text", "text": "Set a limit"},
            },
        },
    ]


def _option(scope: str) -> dict:
    return {"text": {"type": "plain_text", "text": SCOPE_LABELS[scope]}, "value": scope}


def limits_modal() -> dict:
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK,
        "title": {"type": "plain_text", "text": "Spending limit"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "scope",
                "label": {"type": "plain_text", "text": "Whose limit"},
                "element": {
                    "type": "static_select",
                    "action_id": "scope",
                    "initial_option": _option("user"),
                    "options": [_option(scope) for scope in SCOPE_LABELS],
                },
            },
            {
                "type": "input",
                "block_id": "user",
                "optional": True,
                "label": {"type": "plain_text", "text": "Person"},
                "element": {"type": "users_select", "action_id": "user"},
            },
            {
                "type": "input",
                "block_id": "channel",
                "optional": True,
                "label": {"type": "plain_text", "text": "Channel"},
                "element": {
                    "type": "conversations_select",
                    "action_id": "channel",
                    "filter": {"include": ["public", "private"], "exclude_bot_users": True},
                },
            },
            {
                "type": "input",
                "block_id": "amount",
                "label": {"type": "plain_text", "text": "Credits"},
                "hint": {"type": "plain_text", "text": "Like 200/day or 1000/month (UTC), or off to remove the limit."},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "amount",
                    "placeholder": {"type": "plain_text", "text": "200/day"},
                },
            },
        ],
    }


@dataclass(frozen=True)
class LimitChange:
    scope: str
    subject: str
    amount: tuple[int, str] | None  # None: remove the limit


def read_submission(values: dict) -> LimitChange | dict[str, str]:
    """The change the modal asks for, or the errors to show beside its inputs ({block_id: message})."""

    def picked(block: str, key: str) -> str | None:
        value = (values.get(block) or {}).get(block) or {}
        chosen = value.get(key)
        return chosen.get("value") if isinstance(chosen, dict) else chosen

    scope = picked("scope", "selected_option") or "user"
    subject = ""
    if scope == "user":
        subject = picked("user", "selected_user") or ""
        if not subject:
            return {"user": "Choose the person."}
    elif scope == "channel":
        subject = picked("channel", "selected_conversation") or ""
        if not subject:
            return {"channel": "Choose the channel."}
    elif scope != "default":
        return {"scope": "Choose whose limit."}
    written = (picked("amount", "value") or "").strip()
    if written.lower() == "off":
        return LimitChange(scope, subject, None)
    amount = parse_amount(written.replace(" ", ""))
    if amount is None:
        return {"amount": "Write it like 200/day or 1000/month, or off."}
    return LimitChange(scope, subject, amount)
