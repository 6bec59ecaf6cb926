"""Slack delivery: one scheduler per workspace owns every Slack budget, and every write goes through it.

scheduler.py    SlackScheduler / SlackSchedulers: budgets per method and scope, queues, 429 pauses
budgets.py      the window, the pace and the pause of one Slack limit
call_lane.py    one-off calls (posts, DMs, ephemerals, views) waiting their turn under a budget
writer_lane.py  growing messages sharing a budget: which one is written next
edit_writer.py  the one writer of a message that grows by chat.update
stream_writer.py the one writer of a message Slack streams natively (and its fallback to edits)
reply.py        an answer's messages: opened, grown, continued past the size limit, finished
markdown.py     Claude's Markdown cut to Slack's sizes, fences balanced, with a cursor while streaming
"""

from bot.delivery.call_lane import NORMAL, URGENT
from bot.delivery.markdown import CURSOR, MESSAGE_LIMIT, markdown_message, split_markdown, streaming_view
from bot.delivery.reply import Recipient, ReplyJournal, SlackReply
from bot.delivery.scheduler import DeliveryLimits, SlackScheduler, SlackSchedulers

__all__ = [
    "CURSOR",
    "MESSAGE_LIMIT",
    "NORMAL",
    "URGENT",
    "DeliveryLimits",
    "Recipient",
    "ReplyJournal",
    "SlackReply",
    "SlackScheduler",
    "SlackSchedulers",
    "markdown_message",
    "split_markdown",
    "streaming_view",
]
