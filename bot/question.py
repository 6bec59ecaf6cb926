"""A question to the bot, read from a Slack event: who asked, where to answer, which conversation it continues."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.attachments import SharedFile, shared_files
from bot.history import ThreadKey

_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")


@dataclass(frozen=True)
class Question:
    event_id: str
    team_id: str
    user_id: str
    channel_id: str
    ts: str
    text: str
    reply_thread_ts: str | None  # None: answer at the top level of a DM
    conversation: ThreadKey
    joins_existing_thread: bool  # asked inside a thread that was already there
    files: tuple[SharedFile, ...] = ()  # shared with the question (images, PDFs, text files, …)

    @property
    def may_continue_a_conversation(self) -> bool:
        """Earlier turns may exist: a thread that was already there, or a DM's running conversation."""
        return self.joins_existing_thread or not self.conversation.thread_ts

    @property
    def reservation_id(self) -> str:
        """One reservation per question, whatever the number of deliveries."""
        return f"answer:{self.team_id}:{self.event_id}"


def strip_bot_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return text.strip()


def question_from_event(
    event: dict, *, event_id: str, team_id: str, bot_user_id: str | None, dm_replies_in_thread: bool = False
) -> Question | None:
    """None for an event that names no channel or message to answer in (Slack always sends both).

    A DM is one running conversation; its answers go at the top level, or, when answers are streamed (a
    stream is always a reply in a thread), in the thread of the question."""
    channel, ts, text = event.get("channel"), event.get("ts"), event.get("text") or ""
    if not (isinstance(channel, str) and channel and isinstance(ts, str) and ts and isinstance(text, str)):
        return None
    thread_ts = event.get("thread_ts") or None
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    if is_dm:
        reply_thread_ts = thread_ts or (ts if dm_replies_in_thread else None)
        conversation_ts = thread_ts or ""
    else:
        reply_thread_ts = thread_ts or ts
        conversation_ts = reply_thread_ts
    return Question(
        event_id=event_id,
        team_id=team_id,
        user_id=event.get("user", ""),
        channel_id=channel,
        ts=ts,
        text=strip_bot_mention(text, bot_user_id),
        reply_thread_ts=reply_thread_ts,
        conversation=ThreadKey(team_id, channel, conversation_ts),
        joins_existing_thread=bool(thread_ts) and thread_ts != ts,
        files=shared_files(event),
    )


# A person's message that shares files comes as `file_share`; every other subtype (edits, deletions, joins, bots'
# messages, …) is not a question.
QUESTION_SUBTYPES = {None, "file_share"}


def is_user_message(event: dict) -> bool:
    """A person wrote it: not a bot (the bot itself included), not an edit, deletion, join or other subtype."""
    return (
        (event.get("subtype") or None) in QUESTION_SUBTYPES
        and not event.get("bot_id")
        and isinstance(event.get("user"), str)
        and bool(event["user"])
    )


def workspace_id(context_team_id: str | None, body: dict) -> str:
    """The workspace a request comes from, which is what credits and history are kept per. Bolt's
    context has no team id for an org-wide install on Enterprise Grid; the payload still names it."""
    event = body["event"] if isinstance(body.get("event"), dict) else {}
    team = body["team"] if isinstance(body.get("team"), dict) else {}
    user = body["user"] if isinstance(body.get("user"), dict) else {}
    view = event["view"] if isinstance(event.get("view"), dict) else {}
    candidates = (
        context_team_id,
        body.get("team_id"),
        team.get("id"),
        user.get("team_id"),
        view.get("team_id"),
        event.get("team"),
    )
    return next((c for c in candidates if isinstance(c, str) and c), "")
