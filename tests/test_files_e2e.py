"""Questions that share files: Claude sees them (images, PDFs, text), each named; what it cannot be shown is named
with the reason, and the rest is answered; the files' cost is held before Claude is asked; follow-ups see them."""

from __future__ import annotations

import json

from tests.fakes.anthropic import Script, pdf_bytes, png_bytes
from tests.harness import BOT_TOKEN, TEAM

CSV = b"city,visitors\nLisbon,120\nPorto,80\n"


def user_content(request) -> list[dict]:
    content = request.body["messages"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def texts(blocks: list[dict]) -> str:
    return "\n".join(block.get("text", "") for block in blocks if block.get("type") == "text")


async def test_a_text_file_goes_to_claude_named_before_the_question(start_bot_on_each_database):
    h = await start_bot_on_each_database()
    shared = h.slack.add_file(TEAM, name="visits.csv", mimetype="text/csv", content=CSV)
    h.claude.enqueue(Script(text="Lisbon had the most visitors."))
    sent = await h.mention("which city had most visitors?", files=[shared])
    await h.idle()
    assert h.reply_text("C0001", sent.ts).startswith("Lisbon had the most visitors.")
    blocks = user_content(h.claude.requests[0])
    assert blocks[0]["type"] == "text" and blocks[0]["text"].startswith('<file name="visits.csv">')
    assert "Porto,80" in blocks[0]["text"]
    assert blocks[-1]["text"] == "which city had most visitors?"
    (download,) = h.slack.downloads
    assert download.token == BOT_TOKEN and download.served == "file"


async def test_files_that_cannot_be_read_are_named_and_the_rest_answered(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    archive = h.slack.add_file(TEAM, name="backup.zip", mimetype="application/zip", content=b"PK\x03\x04")
    huge = h.slack.add_file(
        TEAM, name="huge.png", mimetype="image/png", content=b"\x89PNG\r\n\x1a\n" + b"\0" * (6 * 1024 * 1024)
    )
    gone = h.slack.add_file(TEAM, name="gone.txt", mimetype="text/plain", content=b"bye")
    h.slack.delete_file(gone["id"])
    notes = h.slack.add_file(TEAM, name="notes.md", mimetype="text/markdown", content=b"# Plan\nShip on Friday.")
    h.claude.enqueue(Script(text="The plan is to ship on Friday."))
    sent = await h.mention("what is the plan?", files=[archive, huge, gone, notes])
    await h.idle()

    reply = h.reply_text("C0001", sent.ts)
    assert reply.startswith("The plan is to ship on Friday.")
    assert "*backup.zip*" in reply and "not zip" in reply
    assert "*huge.png*" in reply and "images can be at most 3.8 MB (this one is 6.0 MB)" in reply
    assert "*gone.txt*" in reply and "deleted, or I have no access" in reply
    assert "notes.md" not in reply
    (request,) = h.claude.requests
    shown = texts(user_content(request))
    assert "Ship on Friday." in shown and "backup.zip" not in shown and "huge.png" not in shown
    assert huge["id"] not in {download.file_id for download in h.slack.downloads}  # too big by its size: not fetched


async def test_without_files_read_the_file_is_named_not_shown(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.slack.workspaces[TEAM].scopes = h.slack.workspaces[TEAM].scopes.replace("files:read,", "")
    shared = h.slack.add_file(TEAM, name="secret.txt", mimetype="text/plain", content=b"the code is 1234")
    h.claude.enqueue(Script(text="I can't see it."))
    sent = await h.mention("what does the file say?", files=[shared])
    await h.idle()
    assert "*secret.txt*" in h.reply_text("C0001", sent.ts)
    assert h.slack.downloads[0].served == "login_page"
    assert "1234" not in json.dumps(h.claude.requests[0].body)


async def test_a_file_shared_without_a_question_in_a_dm_is_described(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    shared = h.slack.add_file(TEAM, name="todo.txt", mimetype="text/plain", content=b"buy milk")
    h.claude.enqueue(Script(text="A shopping list."))
    await h.dm("", files=[shared])
    await h.idle()
    blocks = user_content(h.claude.requests[0])
    assert "buy milk" in blocks[0]["text"] and "without a question" in blocks[-1]["text"]


async def test_only_unreadable_files_and_no_question_gets_one_reply_and_no_claude_call(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    archive = h.slack.add_file(TEAM, name="backup.zip", mimetype="application/zip", content=b"PK\x03\x04")
    sent = await h.mention("", files=[archive])
    await h.idle()
    assert not h.claude.requests
    (reply,) = h.slack.thread("C0001", sent.ts)
    assert "couldn't read any of the files" in h.slack.visible_markdown(
        reply
    ) and "*backup.zip*" in h.slack.visible_markdown(reply)
    balance = await h.services.credits.balance(TEAM)
    assert balance.reserved == 0 and balance.available == balance.balance


async def test_files_the_balance_cannot_cover_are_refused_before_claude_is_asked(start_bot_on_each_database):
    h = await start_bot_on_each_database(free_credits=20, ai_credits_per_message=None)
    big = h.slack.add_file(TEAM, name="log.txt", mimetype="text/plain", content=b"line of a long log\n" * 12_000)
    sent = await h.mention("what went wrong?", files=[big])
    await h.idle()
    assert not h.claude.requests
    reply = h.reply_text("C0001", sent.ts)
    assert "enough credits for a question with these files" in reply and "*20*" in reply
    balance = await h.services.credits.balance(TEAM)
    assert (balance.balance, balance.reserved) == (20, 0)


async def test_a_follow_up_in_the_thread_sees_the_earlier_file_again(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    shared = h.slack.add_file(TEAM, name="visits.csv", mimetype="text/csv", content=CSV)
    h.claude.enqueue(Script(text="Lisbon."))
    first = await h.mention("which city had most visitors?", files=[shared])
    await h.idle()
    h.claude.enqueue(Script(text="Porto."))
    await h.mention("and the fewest?", thread_ts=first.ts)
    await h.idle()
    follow_up = h.claude.requests[1].body["messages"]
    assert [message["role"] for message in follow_up] == ["user", "assistant", "user"]
    assert "Porto,80" in texts(follow_up[0]["content"])
    assert len(h.slack.downloads) == 2  # fetched again from Slack: the bot keeps a reference, not the file


async def test_an_image_and_a_pdf_go_to_claude_as_image_and_document_blocks(start_bot_on_each_database):
    h = await start_bot_on_each_database(ai_credits_per_message=None)
    picture = h.slack.add_file(TEAM, name="chart.png", mimetype="image/png", content=png_bytes(800, 600))
    report = h.slack.add_file(TEAM, name="q3.pdf", mimetype="application/pdf", content=pdf_bytes(3))
    h.claude.enqueue(Script(text="Sales grew."))
    sent = await h.mention("summarise these", files=[picture, report])
    await h.idle()
    assert h.reply_text("C0001", sent.ts).startswith("Sales grew.")
    blocks = user_content(h.claude.requests[0])
    kinds = [block["type"] for block in blocks]
    assert kinds == ["text", "image", "document", "text"]
    assert "chart.png" in blocks[0]["text"] and blocks[1]["source"]["media_type"] == "image/png"
    assert blocks[2]["title"] == "q3.pdf" and blocks[2]["source"]["media_type"] == "application/pdf"
    assert h.claude.requests[0].status == 200
    usage = h.claude.requests[0].usage
    assert (
        usage["input_tokens"] + usage.get("cache_creation_input_tokens", 0) > 640 + 3 * 1500
    )  # the files were counted


async def test_an_image_too_large_in_pixels_is_named_and_not_sent(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    wide = h.slack.add_file(TEAM, name="panorama.png", mimetype="image/png", content=png_bytes(9000, 100))
    h.claude.enqueue(Script(text="I see no image."))
    sent = await h.mention("what is in it?", files=[wide])
    await h.idle()
    assert "images can be at most 8000 pixels a side (this one is 9000×100)" in h.reply_text("C0001", sent.ts)
    assert [block["type"] for block in user_content(h.claude.requests[0])] == ["text"]


async def test_a_pdf_follow_up_reads_the_document_from_the_cache(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(ai_credits_per_message=None, history_token_budget=40_000)
    report = h.slack.add_file(TEAM, name="contract.pdf", mimetype="application/pdf", content=pdf_bytes(2))
    h.claude.enqueue(Script(text="It runs for two years."))
    first = await h.mention("how long does the contract run?", files=[report])
    await h.idle()
    h.claude.enqueue(Script(text="Either side, with 30 days' notice."))
    await h.mention("who may end it?", thread_ts=first.ts)
    await h.idle()
    follow_up = h.claude.requests[1]
    assert [block["type"] for block in follow_up.body["messages"][0]["content"]] == ["document", "text"]
    assert follow_up.usage["cache_read_input_tokens"] >= 2 * 1500  # the PDF came from Anthropic's cache


async def test_a_mention_in_a_group_dm_is_answered_in_its_thread(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    h.slack.add_channel("G0MPIM01", "mpim")
    h.claude.enqueue(Script(text="Hello, all three of you."))
    sent = await h.mention("hi everyone", channel="G0MPIM01")
    await h.idle()
    (reply,) = h.slack.thread("G0MPIM01", sent.ts)
    assert h.slack.visible_markdown(reply).startswith("Hello, all three of you.")
    assert not [call for call in h.slack.calls if call.response.get("error") == "missing_scope"]


def long_thread(h, parent: str, count: int) -> list[dict]:
    stamps = [f"{float(parent) + i:.6f}" for i in range(count)]
    messages = [
        {"type": "message", "user": "U0002", "text": f"message {i}", "ts": ts, "thread_ts": parent}
        for i, ts in enumerate(stamps)
    ]
    h.slack.add_history("C0001", parent, messages)
    return messages


async def test_joining_a_400_message_thread_reads_the_newest_messages_slacks_limit_allows(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(history_token_budget=100_000)
    parent = "1600100000.000100"
    long_thread(h, parent, 400)
    h.claude.enqueue(Script(text="Caught up."))
    await h.mention("summarise this thread", thread_ts=parent)
    await h.idle()
    reads = h.slack.calls_to("conversations.replies")
    assert [call.status for call in reads] == [200, 429]  # a second page within the minute: Slack's limit
    content = h.claude.requests[0].body["messages"][0]["content"]
    shown = texts(content) if isinstance(content, list) else content
    # The thread's start, then the newest messages before the question: what a 15-message page holds.
    assert shown.startswith("<@U0002>: message 0\n") and all(f"message {i}" in shown for i in range(386, 400))
    assert "message 385" not in shown and "message 10\n" not in shown


async def test_with_a_higher_limit_the_whole_thread_is_paged_through(start_bot_on_sqlite):
    h = await start_bot_on_sqlite(history_token_budget=100_000)
    h.slack.replies_limit_per_minute = 100  # a Marketplace app
    parent = "1600200000.000100"
    long_thread(h, parent, 400)
    h.claude.enqueue(Script(text="Caught up."))
    await h.mention("summarise this thread", thread_ts=parent)
    await h.idle()
    assert len(h.slack.calls_to("conversations.replies")) == 27
    content = h.claude.requests[0].body["messages"][0]["content"]
    shown = texts(content) if isinstance(content, list) else content
    assert all(f"message {i}" in shown for i in (0, 1, 200, 399))


async def test_files_in_a_thread_the_bot_joins_are_read_too(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    parent = "1600300000.000100"
    shared = h.slack.add_file(TEAM, name="budget.csv", mimetype="text/csv", content=b"item,cost\nrent,900\n")
    h.slack.add_history(
        "C0001",
        parent,
        [{"type": "message", "user": "U0002", "text": "here is the budget", "ts": parent, "files": [shared]}],
    )
    h.claude.enqueue(Script(text="Rent is 900."))
    await h.mention("what does rent cost?", thread_ts=parent)
    await h.idle()
    first = h.claude.requests[0].body["messages"][0]["content"]
    assert "rent,900" in texts(first) and "here is the budget" in texts(first)


async def test_a_slack_connect_file_is_looked_up_with_files_info_and_named_when_not_shared_with_us(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    allowed = h.slack.add_file(
        TEAM, name="shared.txt", mimetype="text/plain", content=b"from a partner", slack_connect=True
    )
    denied = h.slack.add_file(
        TEAM, name="private.txt", mimetype="text/plain", content=b"not for you", slack_connect=True, accessible=False
    )
    assert allowed.get("file_access") == "check_file_info"
    h.claude.enqueue(Script(text="A partner's note."))
    sent = await h.mention("what did they send?", files=[allowed, denied])
    await h.idle()
    shown = texts(user_content(h.claude.requests[0]))
    assert "from a partner" in shown and "not for you" not in shown
    assert len(h.slack.calls_to("files.info")) == 2
    assert "deleted, or I have no access" in h.reply_text("C0001", sent.ts)


async def test_the_bot_token_goes_only_to_slack_a_remote_files_url_is_not_fetched(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    remote = {
        "id": "F0REMOTE1",
        "name": "plan.txt",
        "mimetype": "text/plain",
        "filetype": "text",
        "size": 10,
        "mode": "external",
        "is_external": True,
        "url_private": "https://attacker.example/steal",
    }
    elsewhere = {
        **h.slack.add_file(TEAM, name="moved.txt", mimetype="text/plain", content=b"x"),
        "url_private_download": "https://attacker.example/moved",
    }
    h.claude.enqueue(Script(text="Nothing to read."))
    sent = await h.mention("read these", files=[remote, elsewhere])
    await h.idle()
    reply = h.reply_text("C0001", sent.ts)
    assert "*plan.txt*" in reply and "*moved.txt*" in reply and reply.count("kept outside Slack") == 2
    assert not h.slack.downloads


async def test_a_broken_image_is_named_and_the_question_answered(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    broken = bytearray(png_bytes(10, 10))
    broken[16:24] = bytes(8)  # a header that says 0×0 pixels
    shared = h.slack.add_file(TEAM, name="broken.png", mimetype="image/png", content=bytes(broken))
    h.claude.enqueue(Script(text="Here is my answer."))
    sent = await h.mention("and this?", files=[shared])
    await h.idle()
    reply = h.reply_text("C0001", sent.ts)
    assert reply.startswith("Here is my answer.") and "*broken.png*" in reply


async def test_a_follow_up_after_the_only_file_of_a_turn_was_deleted_still_reaches_claude(start_bot_on_sqlite):
    h = await start_bot_on_sqlite()
    shared = h.slack.add_file(TEAM, name="list.txt", mimetype="text/plain", content=b"eggs")
    h.claude.enqueue(Script(text="A short list."))
    await h.dm("", files=[shared])
    await h.idle()
    h.slack.delete_file(shared["id"])
    h.claude.enqueue(Script(text="It had eggs."))
    await h.dm("what was on it?")
    await h.idle()
    first_turn = h.claude.requests[1].body["messages"][0]["content"]
    assert first_turn and texts(first_turn if isinstance(first_turn, list) else [{"type": "text", "text": first_turn}])
    assert h.claude.requests[1].status == 200
