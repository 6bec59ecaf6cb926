"""What answers use, as admins see and set it: `/claude model|prompt|websearch|settings` and the Home tab's modal.

Everyone may look; only workspace admins may change. A channel (named like `#general`) gets its own choice;
without one, the change is for the whole workspace. `reset` goes back to what applies above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.answer_settings import MAX_PROMPT_CHARS, WORKSPACE, AnswerSettings, Change
from bot.services import Services
from bot.surfaces.admins import is_admin

EDIT_ACTION = "edit_answer_settings"
MODAL_CALLBACK = "answer_settings"
ADMINS_ONLY = "Only workspace admins can change what answers use."
USAGE = (
    "`/claude settings` shows what answers use. Admins: `/claude model NAME [#channel]`, "
    "`/claude prompt [#channel] TEXT`, `/claude websearch on|off [#channel]`; `reset` instead of a value "
    "goes back to the workspace's (or the default) choice."
)
_CHANNEL = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
KEEP = "keep"


@dataclass(frozen=True)
class Request:
    setting: str | None  # None: show the settings
    channel: str | None
    value: str | bool | None  # None: reset
    problem: str | None = None


def parse(words: list[str]) -> Request:
    """`/claude …` after the command: which setting, for which channel, to what."""
    if not words or words[0].lower() in ("settings", "help"):
        return Request(None, None, None)
    what, rest = words[0].lower(), words[1:]
    channel = None
    for index, word in enumerate(rest):
        if (found := _CHANNEL.match(word)) and (what != "prompt" or index == 0):
            channel = found.group(1)
            rest = rest[:index] + rest[index + 1 :]
            break
    value = " ".join(rest).strip()
    if what == "model":
        if not value:
            return Request("model", channel, None, problem="list")
        return Request("model", channel, None if value.lower() == "reset" else value)
    if what == "prompt":
        if not value:
            return Request(
                "system_prompt", channel, None, problem="Write the prompt after `/claude prompt`, or `reset`."
            )
        return Request("system_prompt", channel, None if value.lower() == "reset" else value)
    if what in ("websearch", "web-search", "search"):
        choice = value.lower()
        if choice not in ("on", "off", "reset"):
            return Request("web_search", channel, None, problem="Use `/claude websearch on`, `off` or `reset`.")
        return Request("web_search", channel, None if choice == "reset" else choice == "on")
    return Request(None, None, None, problem=f"I don't know `{words[0]}`. {USAGE}")


def model_lines(services: Services) -> list[str]:
    return [f"• `{model}`: {services.pricing_for(model).describe()}" for model in services.priced_models()]


def problem_with(services: Services, setting: str, value: str | bool | None) -> str | None:
    if setting == "model" and value is not None and value not in services.priced_models():
        return f"`{value}` has no price, so answers cannot be charged for it. Models with a price:\n" + "\n".join(
            model_lines(services)
        )
    if setting == "system_prompt" and isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
        return f"A prompt can be at most {MAX_PROMPT_CHARS:,} characters (this one has {len(value):,})."
    return None


async def claude_command(services: Services, client, team_id: str, user_id: str, words: list[str]) -> str:
    request = parse(words)
    if request.problem == "list":
        return (
            "Models answers can use (estimates per answer):\n"
            + "\n".join(model_lines(services))
            + "\n\n`/claude model NAME [#channel]` chooses one."
        )
    if request.problem:
        return request.problem
    if request.setting is None:
        return await overview_text(services, team_id)
    if not user_id or not await is_admin(client, user_id):
        return ADMINS_ONLY
    problem = problem_with(services, request.setting, request.value)
    if problem:
        return problem
    change = await services.answer_settings.change(team_id, request.channel, request.setting, request.value, by=user_id)
    where = f"<#{request.channel}>" if request.channel else "the workspace"
    if change is None:
        return f"Nothing changed: that is already so for {where}."
    return f"Done: {describe_change(change)}. It applies from the next question."


def describe_change(change: Change) -> str:
    where = f"in <#{change.channel_id}>" if change.channel_id != WORKSPACE else "for the workspace"
    label = {"model": "model", "system_prompt": "system prompt", "web_search": "web search"}[change.setting]
    new = change.new_value if change.new_value is not None else "the default"
    if change.setting == "system_prompt" and change.new_value is not None:
        new = f"“{_short(change.new_value)}”"
    return f"{label} {where} set to {new} by <@{change.changed_by}>"


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def overview_text(services: Services, team_id: str) -> str:
    store: AnswerSettings = services.answer_settings
    chosen = await store.overview(team_id)
    workspace = chosen.get(WORKSPACE, {})
    defaults = store.defaults
    lines = [
        "*What answers use in this workspace*",
        f"• Model: `{workspace.get('model', defaults.model)}`" + ("" if "model" in workspace else " (default)"),
        f"• System prompt: “{_short(str(workspace.get('system_prompt', defaults.system_prompt)))}”"
        + ("" if "system_prompt" in workspace else " (default)"),
        f"• Web search: {'on' if workspace.get('web_search') else 'off'}",
    ]
    for channel, values in chosen.items():
        if channel == WORKSPACE or not values:
            continue
        parts = [
            f"model `{values['model']}`" if "model" in values else None,
            f"prompt “{_short(str(values['system_prompt']), 40)}”" if "system_prompt" in values else None,
            f"web search {'on' if values['web_search'] else 'off'}" if "web_search" in values else None,
        ]
        lines.append(f"• In <#{channel}>: " + ", ".join(part for part in parts if part))
    changes = await store.history(team_id, limit=5)
    if changes:
        lines.append("*Latest changes*")
        lines += [f"• {change.changed_at:%Y-%m-%d %H:%M} UTC: {describe_change(change)}" for change in changes]
    return "\n".join(lines)


def home_settings_blocks(text: str) -> list[dict]:
    return [
        {
            "type": "section",
            "block_id": "answer_settings",
            "text": {"type": "mrkdwn", "text": text[:2900]},
            "accessory": {
                "type": "button",
                "action_id": EDIT_ACTION,
                "value": "edit",
                "text": {"type": "plain_text", "text": "Change"},
            },
        }
    ]


def settings_modal(services: Services) -> dict:
    def option(value: str, text: str) -> dict:
        return {"text": {"type": "plain_text", "text": text[:75]}, "value": value}

    priced = [option(model, f"{model}: {services.pricing_for(model).describe()}") for model in services.priced_models()]
    models = [option(KEEP, "Keep as it is"), *priced[:99]]  # Slack takes 100 options
    search = [
        option(KEEP, "Keep as it is"),
        option("on", "On"),
        option("off", "Off"),
        option("reset", "As the workspace"),
    ]
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK,
        "title": {"type": "plain_text", "text": "Answers"},
        "submit": {"type": "plain_text", "text": "Save"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": "channel",
                "optional": True,
                "label": {"type": "plain_text", "text": "Channel"},
                "hint": {"type": "plain_text", "text": "Leave empty to change the whole workspace."},
                "element": {
                    "type": "conversations_select",
                    "action_id": "channel",
                    "filter": {"include": ["public", "private", "mpim"], "exclude_bot_users": True},
                },
            },
            {
                "type": "input",
                "block_id": "model",
                "label": {"type": "plain_text", "text": "Model"},
                "element": {
                    "type": "static_select",
                    "action_id": "model",
                    "initial_option": models[0],
                    "options": models,
                },
            },
            {
                "type": "input",
                "block_id": "prompt",
                "optional": True,
                "label": {"type": "plain_text", "text": "System prompt"},
                "hint": {"type": "plain_text", "text": "Empty keeps it as it is; reset goes back to the default."},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "prompt",
                    "multiline": True,
                    "max_length": MAX_PROMPT_CHARS,
                },
            },
            {
                "type": "input",
                "block_id": "web_search",
                "label": {"type": "plain_text", "text": "Web search"},
                "element": {
                    "type": "static_select",
                    "action_id": "web_search",
                    "initial_option": search[0],
                    "options": search,
                },
            },
        ],
    }


def read_modal(values: dict) -> tuple[str | None, list[tuple[str, str | bool | None]]]:
    """(the channel or None for the workspace, [(setting, value)]) from the modal's submission."""

    def picked(block: str, key: str):
        chosen = ((values.get(block) or {}).get(block) or {}).get(key)
        return chosen.get("value") if isinstance(chosen, dict) else chosen

    changes: list[tuple[str, str | bool | None]] = []
    model = picked("model", "selected_option")
    if model and model != KEEP:
        changes.append(("model", model))
    prompt = (picked("prompt", "value") or "").strip()
    if prompt:
        changes.append(("system_prompt", None if prompt.lower() == "reset" else prompt))
    search = picked("web_search", "selected_option")
    if search and search != KEEP:
        changes.append(("web_search", None if search == "reset" else search == "on"))
    return picked("channel", "selected_conversation") or None, changes
