"""Claude's Markdown, cut into pieces Slack's `markdown` block accepts, and shown safely while it streams.

Slack renders the Markdown itself; all this module does is keep every message under the size
limit and every code fence balanced, so that half an answer never breaks the rest of a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Slack counts 12,000 characters of Markdown per message; the margin leaves room for the
# cursor, a closing fence and a continuation's reopened fence.
MESSAGE_LIMIT = 11_000
CURSOR = "▌"

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
# A chunk cut much earlier than the limit just to land on a nicer boundary wastes a message.
_MIN_FILL = 0.5


@dataclass(frozen=True)
class Fence:
    marker: str
    info: str

    @property
    def opening(self) -> str:
        return f"{self.marker}{self.info}"


def _next_fence_state(line: str, fence: Fence | None) -> Fence | None:
    match = _FENCE.match(line)
    if not match:
        return fence
    marker, info = match.group(1), match.group(2).strip()
    if fence is None:
        return Fence(marker, info)
    # A fence closes only with the same character, at least as long, and nothing after it.
    if marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not info:
        return None
    return fence


def open_fence(markdown: str) -> Fence | None:
    """The code fence still open at the end of `markdown`, if any."""
    fence = None
    for line in markdown.split("\n"):
        fence = _next_fence_state(line, fence)
    return fence


def close_fence(markdown: str, fence: Fence | None) -> str:
    if fence is None:
        return markdown
    separator = "" if markdown.endswith("\n") else "\n"
    return f"{markdown}{separator}{fence.marker}"


def streaming_view(markdown: str) -> str:
    """What a message shows while its answer is still being written: a cursor, and fences closed."""
    return close_fence(markdown + CURSOR, open_fence(markdown))


@dataclass(frozen=True)
class _Cut:
    head_end: int  # the head is text[:head_end]
    tail_start: int  # the tail is text[tail_start:]
    fence: Fence | None  # open at the cut: close it in the head, reopen it in the tail


def _best_cut(text: str, budget: int) -> _Cut:
    """Where to end a message of at most `budget` characters: outside code at a paragraph, then a
    line; failing that inside a code block at a line (the fence is closed and reopened); then a
    word; then anywhere."""
    floor = int(budget * _MIN_FILL)
    paragraph = line_outside = line_inside = None
    fence: Fence | None = None
    position = 0
    for line in text.split("\n"):
        end = position + len(line)
        if end > budget:
            break
        fence = _next_fence_state(line, fence)
        if end >= floor and end < len(text):
            if fence is None:
                line_outside = _Cut(end, end + 1, None)
                if line == "" and position > 0:
                    paragraph = _Cut(position - 1, end + 1, None)
            else:
                line_inside = _Cut(end, end + 1, fence)
        position = end + 1
    for cut in (paragraph, line_outside, line_inside):
        if cut is not None:
            return cut
    space = text.rfind(" ", floor, budget)
    end = space if space > 0 else budget
    return _Cut(end, end + 1 if space > 0 else end, open_fence(text[:end]))


def split_markdown(markdown: str, limit: int = MESSAGE_LIMIT, *, keep: int = 0) -> list[str]:
    """Cut `markdown` into messages of at most `limit` characters each, code fences balanced in each. The first
    piece keeps at least `keep` characters (a streamed message cannot take back what it showed)."""
    pieces: list[str] = []
    text = markdown
    # The closing fence added to a head, and the reopened one in front of a tail, must fit too.
    budget = limit - 16
    while len(text) > limit:
        cut = _best_cut(text, budget)
        if cut.head_end < keep:
            cut = _Cut(keep, keep, open_fence(text[:keep]))
        keep = 0
        head, tail = text[: cut.head_end], text[cut.tail_start :]
        if cut.fence is not None:
            head = close_fence(head, cut.fence)
            tail = f"{cut.fence.opening}\n{tail}"
        else:
            tail = tail.lstrip("\n")
        pieces.append(head.rstrip() or head)
        text = tail
    pieces.append(text)
    return pieces


def markdown_message(markdown: str, blocks: list[dict] | None = None) -> dict:
    """The arguments of a message that Slack renders from Markdown, with a plain fallback (and `blocks` under it)."""
    return {"text": plain_fallback(markdown), "blocks": [{"type": "markdown", "text": markdown}, *(blocks or [])]}


def plain_fallback(markdown: str, limit: int = 3000) -> str:
    """The `text` Slack shows in notifications and where blocks cannot render."""
    if len(markdown) <= limit:
        return markdown
    return markdown[: limit - 1] + "…"
