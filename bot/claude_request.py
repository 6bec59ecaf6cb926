"""What Claude is asked, and the most an answer's input can cost (reserved before the request is built)."""

from __future__ import annotations

import math
from typing import Any

from bot.answer_settings import AnswerChoice
from bot.attachments import ConversationFiles
from bot.claude_stream import CHARS_PER_TOKEN
from bot.history import Turn
from config import Settings

CACHE_POINT = {"type": "ephemeral"}
# Reserve for more input than the usual four characters a token: code and many languages pack tighter.
RESERVE_CHARS_PER_TOKEN = 3
RESERVE_OVERHEAD_TOKENS = 16
# What one web search may add to the input: its results (read as input tokens), often tens of thousands.
WEB_SEARCH_RESERVE_TOKENS = 25_000


NO_QUESTION = "(I shared the files above without a question: tell me what they are and what matters in them.)"


def _cached(content: str | list[dict]) -> list[dict]:
    """`content` with a cache breakpoint on its last block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content, "cache_control": CACHE_POINT}]
    return [*content[:-1], {**content[-1], "cache_control": CACHE_POINT}]


FILES_GONE = "(files were shared here that are no longer available)"


def _content(text: str, file_blocks: list[dict]) -> str | list[dict]:
    """A turn's content; never empty (the API refuses an empty turn), even when its only files are gone."""
    if not file_blocks:
        return text or FILES_GONE
    return [*file_blocks, {"type": "text", "text": text}] if text else list(file_blocks)


def build_claude_request(
    settings: Settings,
    prior: list[Turn],
    question: str,
    files: ConversationFiles | None = None,
    choice: AnswerChoice | None = None,
) -> dict:
    """Breakpoints on the system prompt, the end of the earlier conversation and the new question, so
    that a follow-up reads everything before it from Anthropic's cache instead of paying for it again.
    Files go first in the turn that shared them, each named."""
    files = files or ConversationFiles()
    messages: list[dict[str, Any]] = []
    for turn in prior:
        blocks = [
            block
            for record in turn.files
            if (found := files.earlier.get(record.get("id", "")))
            for block in found.blocks
        ]
        messages.append({"role": turn.role, "content": _content(turn.content, blocks)})
    if messages:
        messages[-1]["content"] = _cached(messages[-1]["content"])
    messages.append({"role": "user", "content": _cached(_content(question or NO_QUESTION, files.question.blocks))})
    request = {
        "model": choice.model if choice else settings.claude_model,
        "max_tokens": settings.claude_max_tokens,
        "system": _cached(choice.system_prompt if choice else settings.system_prompt),
        "messages": messages,
    }
    if choice is not None and choice.web_search:
        request["tools"] = [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": settings.web_search_max_uses}
        ]
    return request


def input_allowance(
    settings: Settings, question: str, *, with_history: bool, system_prompt: str | None = None, web_search: bool = False
) -> int:
    """The most input tokens the request can have, known before the history is read: the system prompt,
    the question and, for a conversation that may have earlier turns, the whole history budget (which
    the history is trimmed to, at CHARS_PER_TOKEN characters a token)."""
    characters = len(settings.system_prompt if system_prompt is None else system_prompt) + len(question)
    if with_history:
        characters += settings.history_token_budget * CHARS_PER_TOKEN
    searched = settings.web_search_max_uses * WEB_SEARCH_RESERVE_TOKENS if web_search else 0
    return math.ceil(characters / RESERVE_CHARS_PER_TOKEN) + RESERVE_OVERHEAD_TOKENS + searched
