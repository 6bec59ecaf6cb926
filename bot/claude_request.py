"""What Claude is asked, and the most an answer's input can cost (reserved before the request is built)."""

from __future__ import annotations

import math
from typing import Any

from bot.claude_stream import CHARS_PER_TOKEN
from bot.history import Turn
from config import Settings

CACHE_POINT = {"type": "ephemeral"}
# Reserve for more input than the usual four characters a token: code and many languages pack tighter.
RESERVE_CHARS_PER_TOKEN = 3
RESERVE_OVERHEAD_TOKENS = 16


def _cached(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": CACHE_POINT}]


def build_claude_request(settings: Settings, prior: list[Turn], question: str) -> dict:
    """Breakpoints on the system prompt, the end of the earlier conversation and the new question, so
    that a follow-up reads everything before it from Anthropic's cache instead of paying for it again."""
    messages: list[dict[str, Any]] = [{"role": turn.role, "content": turn.content} for turn in prior]
    if messages:
        messages[-1]["content"] = _cached(messages[-1]["content"])
    messages.append({"role": "user", "content": _cached(question)})
    return {
        "model": settings.claude_model,
        "max_tokens": settings.claude_max_tokens,
        "system": _cached(settings.system_prompt),
        "messages": messages,
    }


def input_allowance(settings: Settings, question: str, *, with_history: bool) -> int:
    """The most input tokens the request can have, known before the history is read: the system prompt,
    the question and, for a conversation that may have earlier turns, the whole history budget (which
    the history is trimmed to, at CHARS_PER_TOKEN characters a token)."""
    characters = len(settings.system_prompt) + len(question)
    if with_history:
        characters += settings.history_token_budget * CHARS_PER_TOKEN
    return math.ceil(characters / RESERVE_CHARS_PER_TOKEN) + RESERVE_OVERHEAD_TOKENS
