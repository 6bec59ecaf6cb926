"""SlackReply against the Slack fake: continuation messages under pressure."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import CURSOR, DeliveryLimits, SlackReply, SlackScheduler
from tests.fakes.slack import FakeSlack


async def test_text_arriving_while_a_continuation_is_posted_is_neither_lost_nor_left_with_a_cursor():
    async with FakeSlack(post_burst=50) as slack:
        slack.add_workspace("T1", "xoxb-1")
        client = AsyncWebClient(token="xoxb-1", base_url=slack.api_url)
        reply = SlackReply(
            client,
            SlackScheduler(DeliveryLimits(edits_per_minute=1000, update_interval=0.0, channel_posts_per_second=50)),
            channel="C1",
            thread_ts="1.0",
            limit=100,
        )
        await reply.start("_Thinking…_")
        words = [f"word{i:02d}" for i in range(60)]
        for word in words:  # all of it arrives before the first continuation post can complete
            reply.append(word + " ")
        assert await reply.finish("NOTICE")
        shown = [slack.visible_markdown(message) for message in slack.thread("C1", "1.0")]
        assert len(shown) >= 5
        assert all(CURSOR not in text for text in shown), shown
        assert all(len(text) <= 100 for text in shown)
        assert " ".join(shown).split() == [*words, "NOTICE"]


async def test_a_continuation_slack_refuses_stops_the_answer_instead_of_hiding_the_failure():
    async with FakeSlack(post_burst=50) as slack:
        slack.add_workspace("T1", "xoxb-1")
        client = AsyncWebClient(token="xoxb-1", base_url=slack.api_url)
        reply = SlackReply(
            client,
            SlackScheduler(DeliveryLimits(edits_per_minute=1000, update_interval=0.0, channel_posts_per_second=50)),
            channel="C1",
            thread_ts="1.0",
            limit=100,
        )
        stopped = []
        reply.on_gone(lambda: stopped.append(True))
        await reply.start("_Thinking…_")
        slack.inject("chat.postMessage", "channel_not_found")
        for i in range(30):
            reply.append(f"word{i:02d} ")
        assert await reply.finish() is False
        assert stopped == [True], "the Claude stream is told to stop"
        (first,) = slack.thread("C1", "1.0")
        assert CURSOR not in slack.visible_markdown(first)
