"""The fake Anthropic API, driven by the real SDK: if these pass, the SDK parses what the fake sends."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
import zlib

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic.types import ImageDimensionsTooLargeError

from tests.fakes.anthropic import (
    MAX_IMAGE_BYTES,
    MAX_REQUEST_BYTES,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    FakeAnthropic,
    Script,
    count_input_tokens,
    document_block,
    gif_bytes,
    image_block,
    image_size,
    image_tokens,
    jpeg_bytes,
    pdf_bytes,
    pdf_page_texts,
    pdf_page_tokens,
    png_bytes,
    split_deltas,
    webp_bytes,
)

MODEL = "claude-sonnet-4-6"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def fake():
    fake = FakeAnthropic(min_cache_tokens=50)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(fake):
    client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.base_url, max_retries=0)
    yield client
    await client.close()


async def post(fake: FakeAnthropic, path: str, body: object, headers: dict | None = None) -> tuple[int, dict, str]:
    headers = {"x-api-key": "test", "anthropic-version": "2023-06-01"} if headers is None else headers
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.base_url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


def sse_events(raw: str) -> list[tuple[str, str]]:
    events = []
    for chunk in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], lines["data"]))
    return events


async def test_stream_accumulates_text_and_reports_usage(fake, client):
    text = "Paris is the capital and largest city of France."
    fake.enqueue(Script(text=text, delta_chars=10))
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
        deltas = [delta async for delta in stream.text_stream]
        message = await stream.get_final_message()

    assert "".join(deltas) == text
    assert len(deltas) > 2 and all(len(d) <= 20 for d in deltas)
    assert message.id.startswith("msg_") and message.model == MODEL
    assert message.stop_reason == "end_turn"
    received = fake.requests[0]
    assert stream.request_id == received.request_id and received.request_id.startswith("req_")
    assert message.usage.input_tokens == count_input_tokens(received.body) > 0
    assert message.usage.output_tokens == math.ceil(len(text) / 4)
    assert (message.usage.cache_creation_input_tokens, message.usage.cache_read_input_tokens) == (0, 0)
    assert received.usage["output_tokens"] == message.usage.output_tokens
    assert received.deltas_sent == len(deltas) and not received.cancelled


async def test_default_answer_echoes_the_last_user_message_and_scripts_are_fifo(fake, client):
    fake.enqueue(Script(text="first"), Script(text="second"))
    answers = []
    for _ in range(3):
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
            answers.append(await stream.get_final_text())
    fake.default = Script(text="new default")
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=QUESTION)
    assert answers == ["first", "second", "You said: What is the capital of France?"]
    assert message.content[0].text == "new default" and message.stop_reason == "end_turn"


async def test_wire_format_matches_the_api(fake):
    status, headers, raw = await post(
        fake, "/v1/messages", {"model": MODEL, "max_tokens": 50, "stream": True, "messages": QUESTION}
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert headers["request-id"].startswith("req_")
    names = [name for name, _ in sse_events(raw)]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    data = {name: json.loads(d) for name, d in sse_events(raw)}
    start_usage = data["message_start"]["message"]["usage"]
    assert start_usage["output_tokens"] == 1 and data["message_start"]["message"]["stop_reason"] is None
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(start_usage)
    delta = data["message_delta"]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"} <= set(
        delta["usage"]
    )


async def test_overloaded_before_streaming_raises_overloaded_error_with_request_id(fake, client):
    fake.enqueue(Script(http_error=529))
    with pytest.raises(anthropic.InternalServerError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION):
            pass
    error = caught.value
    assert type(error) is anthropic.OverloadedError and isinstance(error, anthropic.APIStatusError)
    assert error.status_code == 529 and error.type == "overloaded_error"
    assert error.request_id == fake.requests[0].request_id
    assert error.body["request_id"] == error.request_id


async def test_rate_limit_carries_retry_after(fake, client):
    fake.enqueue(Script(http_error=429, retry_after=7))
    with pytest.raises(anthropic.RateLimitError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION):
            pass
    assert caught.value.status_code == 429 and caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.request_id == fake.requests[0].request_id


async def test_error_event_mid_stream_raises_plain_api_status_error_with_status_200(fake, client):
    fake.enqueue(Script(text="one two three four five six", delta_chars=4, error_after_deltas=2))
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
            async for delta in stream.text_stream:
                seen.append(delta)
    error = caught.value
    assert type(error) is anthropic.APIStatusError  # not OverloadedError: the HTTP status was 200
    assert error.status_code == 200 and error.type == "overloaded_error"
    assert error.request_id == fake.requests[0].request_id
    assert seen == ["one ", "two "] and fake.requests[0].deltas_sent == 2


async def test_dropped_connection_raises_the_transport_error(fake, client):
    fake.enqueue(Script(text="one two three four five six", delta_chars=4, drop_after_deltas=1))
    seen = []
    with pytest.raises(httpx2.TransportError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
            async for delta in stream.text_stream:
                seen.append(delta)
    assert isinstance(caught.value, httpx2.RemoteProtocolError)
    assert not isinstance(caught.value, anthropic.APIConnectionError)
    assert seen == ["one "]


async def test_stream_ending_without_message_stop_raises_nothing(fake, client):
    fake.enqueue(Script(text="one two three four", delta_chars=4, end_without_stop_after_deltas=2))
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason is None
    assert message.content[0].text == "one two "
    assert message.usage.output_tokens == 1  # only message_start's placeholder arrived


async def test_max_tokens_caps_the_answer(fake, client):
    fake.enqueue(Script(text="word " * 100))
    async with client.messages.stream(model=MODEL, max_tokens=5, messages=QUESTION) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5 and len(message.content[0].text) <= 20


def cached_system(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


async def test_second_request_with_the_same_prefix_reads_the_cache(fake, client):
    system = cached_system("You are a helpful assistant in Slack. " * 10)  # ~95 tokens, above 50
    usages = []
    for question in ("first question", "a second, different question"):
        body = {
            "model": MODEL,
            "max_tokens": 100,
            "system": system,
            "messages": [{"role": "user", "content": question}],
        }
        async with client.messages.stream(**body) as stream:
            usages.append((await stream.get_final_message()).usage)
    prefix = usages[0].cache_creation_input_tokens
    assert prefix > 50 and usages[0].cache_read_input_tokens == 0
    assert usages[0].cache_creation.ephemeral_5m_input_tokens == prefix
    assert usages[1].cache_read_input_tokens == prefix and usages[1].cache_creation_input_tokens == 0
    total = count_input_tokens(fake.requests[1].body)
    assert usages[1].input_tokens == total - prefix > 0

    # Another model has its own cache.
    async with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, system=system, messages=QUESTION
    ) as stream:
        other = (await stream.get_final_message()).usage
    assert other.cache_read_input_tokens == 0 and other.cache_creation_input_tokens == prefix


async def test_moved_breakpoint_reads_the_earlier_prefix_and_writes_the_rest(fake, client):
    system = "Background facts about the workspace. " * 10
    turn1 = [
        {"role": "user", "content": [{"type": "text", "text": "hello " * 40, "cache_control": {"type": "ephemeral"}}]}
    ]
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": "hello " * 40}]},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "tell me more " * 10, "cache_control": {"type": "ephemeral"}}],
        },
    ]
    first = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=turn1)
    second = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=turn2)
    written = first.usage.cache_creation_input_tokens
    assert written == count_input_tokens({"system": system, "messages": turn1}) and first.usage.input_tokens == 0
    assert second.usage.cache_read_input_tokens == written
    assert (
        second.usage.cache_creation_input_tokens == count_input_tokens({"system": system, "messages": turn2}) - written
    )


async def test_prefix_below_the_minimum_is_not_cached(client):
    async with FakeAnthropic() as strict:  # default minimum: 1024 tokens
        small = anthropic.AsyncAnthropic(api_key="test", base_url=strict.base_url, max_retries=0)
        for _ in range(2):
            message = await small.messages.create(
                model=MODEL, max_tokens=50, system=cached_system("short " * 50), messages=QUESTION
            )
            assert (message.usage.cache_creation_input_tokens, message.usage.cache_read_input_tokens) == (0, 0)
        assert message.usage.input_tokens == count_input_tokens(strict.requests[0].body)
        await small.close()


async def test_client_closing_the_stream_marks_the_request_cancelled(fake, client):
    fake.enqueue(Script(text="word " * 50, delta_chars=5, delay=0.02))
    async with client.messages.stream(model=MODEL, max_tokens=500, messages=QUESTION) as stream:
        async for _delta in stream.text_stream:
            assert fake.open_streams == 1
            break
    await fake.wait_for_idle(timeout=1)
    received = fake.requests[0]
    assert received.cancelled and fake.open_streams == 0
    assert 1 <= received.deltas_sent < 10
    assert received.usage["output_tokens"] == math.ceil(len(received.text) / 4)


async def test_first_delay_paces_the_first_delta(fake, client):
    fake.enqueue(Script(text="a b", delta_chars=1, first_delay=0.06))
    started = time.monotonic()
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=QUESTION) as stream:
        async for _ in stream.text_stream:
            break
        first = time.monotonic() - started
        await stream.until_done()
    assert first >= 0.06 and not fake.requests[0].cancelled


async def test_requests_are_validated_like_the_api(fake, client):
    fake.enqueue(Script(text="kept for the valid request"))
    status, headers, raw = await post(fake, "/v1/messages", {"model": MODEL, "messages": QUESTION})
    assert status == 400 and "max_tokens: Field required" in raw and headers["request-id"] in raw
    status, _, raw = await post(
        fake,
        "/v1/messages",
        {"model": MODEL, "max_tokens": 5, "messages": QUESTION},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert status == 401 and "authentication_error" in raw
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=[])
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    assert caught.value.request_id == fake.requests[-1].request_id
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=QUESTION)
    assert message.content[0].text == "kept for the valid request"  # invalid requests consumed no script
    await fake.wait_for_requests(4)


async def test_count_tokens_matches_the_usage_of_a_real_request(fake, client):
    count = await client.messages.count_tokens(model=MODEL, messages=QUESTION, system="Be brief.")
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=QUESTION, system="Be brief.")
    assert count.input_tokens == message.usage.input_tokens == count_input_tokens(fake.requests[0].body)
    assert len(fake.count_requests) == 1


async def test_wait_for_requests_times_out(fake):
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(1, timeout=0.02)


def test_split_deltas_keeps_the_text_and_cuts_at_words():
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit " + "x" * 40
    chunks = split_deltas(text, 12)
    assert "".join(chunks) == text
    assert all(c.endswith(" ") for c in chunks[:3]) and max(len(c) for c in chunks) <= 24


# --- images ---


def ask(*blocks: dict, question: str = "What is in this?") -> list[dict]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": question}]}]


def png_rows(data: bytes) -> bytes:
    """The decompressed IDAT of a PNG: proof that it is a real PNG, not just a header."""
    i, idat = 8, b""
    while i < len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        assert (
            zlib.crc32(data[i + 4 : i + 8 + length]) == struct.unpack(">I", data[i + 8 + length : i + 12 + length])[0]
        )
        if kind == b"IDAT":
            idat += data[i + 8 : i + 8 + length]
        i += 12 + length
    return zlib.decompress(idat)


def test_image_helpers_make_images_of_the_given_size():
    png = png_bytes(37, 19)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and image_size(png) == (37, 19)
    assert png_rows(png) == (b"\x00" + b"\x00" * 5) * 19  # 1-bit rows of 37 pixels, filter byte first
    assert len(png_bytes(5, 3, min_bytes=10_000)) == 10_000 and png_rows(png_bytes(5, 3, min_bytes=10_000))
    assert image_size(png_bytes(8001, 8000)) == (8001, 8000)
    for make, magic in ((jpeg_bytes, b"\xff\xd8\xff"), (gif_bytes, b"GIF89a"), (webp_bytes, b"RIFF")):
        data = make(640, 480)
        assert data.startswith(magic) and image_size(data) == (640, 480)
    assert webp_bytes(9, 9)[8:16] == b"WEBPVP8L" and jpeg_bytes(16, 16).endswith(b"\xff\xd9")
    assert len(jpeg_bytes(8, 8, min_bytes=70_000)) == 70_000
    # A lossy VP8 header as encoders write it: frame tag, start code, 14-bit width and height.
    vp8 = b"VP8 " + struct.pack("<I", 10) + b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", 321, 123)
    assert image_size(b"RIFF" + struct.pack("<I", 4 + len(vp8)) + b"WEBP" + vp8) == (321, 123)


def test_image_tokens_follow_the_documented_formula():
    assert image_tokens(200, 150) == 40 and image_tokens(1000, 1000) == 1334  # ceil(w * h / 750)
    assert image_tokens(1092, 1092) == 1590  # about 1.19 megapixels: not scaled
    assert image_tokens(3000, 2000) <= 1600 and image_tokens(8000, 8000) <= 1600  # scaled down first
    assert image_tokens(1568, 100) == math.ceil(1568 * 100 / 750)
    assert image_tokens(3136, 200) == math.ceil(1568 * 100 / 750)  # long edge halved to 1568


async def test_image_tokens_count_in_usage_and_count_tokens(fake, client):
    fake.enqueue(Script(text="A black rectangle."))
    messages = ask(image_block(png_bytes(200, 150)), question="What is this?")
    counted = await client.messages.count_tokens(model=MODEL, messages=messages)
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=messages)
    expected = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 40 + math.ceil(len("What is this?") / 4)
    assert counted.input_tokens == message.usage.input_tokens == count_input_tokens({"messages": messages}) == expected
    assert fake.requests[0].body["messages"][0]["content"][0]["source"]["media_type"] == "image/png"

    # Each format, and an image inside a tool result, the way a tool returns a screenshot.
    images = [image_block(make(100, 75)) for make in (png_bytes, jpeg_bytes, gif_bytes, webp_bytes)]
    tool_turns = [
        *ask(*images),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "screenshot", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": [image_block(png_bytes(750, 10))]}
            ],
        },
    ]
    counted = await client.messages.count_tokens(model=MODEL, messages=tool_turns)
    assert counted.input_tokens == count_input_tokens({"messages": tool_turns}) > 4 * image_tokens(100, 75) + 10


async def test_default_answer_quotes_only_the_text_next_to_an_image(client):
    message = await client.messages.create(
        model=MODEL, max_tokens=50, messages=ask(image_block(png_bytes(4, 4)), question="And this?")
    )
    assert message.content[0].text == "You said: And this?"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_image(media_type: str, data: str) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


@pytest.mark.parametrize(
    "block, message",
    [
        (
            raw_image("image/bmp", b64(b"BM....")),
            (
                "messages.0.content.0.image.source.base64.media_type: Input should be "
                "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            ),
        ),
        (raw_image("image/png", ""), "messages.0.content.0.image.source.base64: image cannot be empty"),
        (raw_image("image/png", "not base64!"), "messages.0.content.0.image.source.base64: invalid base64 data"),
        (
            raw_image("image/jpeg", b64(png_bytes(2, 2))),
            "messages.0.content.0.image.source.base64.data: Image does not match the provided media type image/jpeg",
        ),
        (
            raw_image("image/png", b64(b"plain text, not an image")),
            "messages.0.content.0.image.source.base64.data: Image does not match the provided media type image/png",
        ),
        (
            raw_image("image/webp", b64(b"RIFF\x00\x00\x00\x00WAVEfmt ")),
            "messages.0.content.0.image.source.base64.data: Image does not match the provided media type image/webp",
        ),
        (raw_image("image/jpeg", b64(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9")), "Could not process image"),
        (
            raw_image("image/png", b64(png_bytes(1, 1, min_bytes=MAX_IMAGE_BYTES * 3 // 4 + 1))),
            "messages.0.content.0.image.source.base64: image exceeds 5 MB maximum: 5242884 bytes > 5242880 bytes",
        ),
        (
            {"type": "image", "source": {"type": "url", "url": "https://example.com/missing.png"}},
            "messages.0.content.0.image.source.url: Unable to download the file. Please verify the URL and try again.",
        ),
    ],
)
async def test_images_are_validated_like_the_api(fake, client, block, message):
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask(block))
    assert caught.value.type == "invalid_request_error" and caught.value.api_message == message
    assert caught.value.request_id == fake.requests[0].request_id


async def test_the_5_mb_limit_is_on_the_base64_string(client):
    largest = png_bytes(1, 1, min_bytes=MAX_IMAGE_BYTES * 3 // 4)  # 3.75 MiB: exactly 5 MiB of base64
    assert len(b64(largest)) == MAX_IMAGE_BYTES
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=ask(image_block(largest)))
    assert message.usage.input_tokens == count_input_tokens({"messages": ask(image_block(largest))})


async def test_sides_over_8000_pixels_raise_image_dimensions_too_large(fake, client):
    messages = ask(
        image_block(png_bytes(8000, 10)), image_block(png_bytes(10, 8001)), image_block(jpeg_bytes(9000, 9000))
    )
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    error = caught.value
    assert isinstance(error, ImageDimensionsTooLargeError) and error.error_code == "image_dimensions_too_large"
    assert error.api_message == (
        "messages.0.content.1.image.source.base64.data: At least one of the image "
        "dimensions exceed max allowed size: 8000 pixels"
    )
    assert error.details.max_side_length_pixels == 8000
    assert error.details.paths == ["messages.0.content.1", "messages.0.content.2"]

    # More than 20 images in a request: 2000 pixels a side at most.
    many = ask(*[image_block(png_bytes(2000, 2000))] * 20, image_block(gif_bytes(2001, 5)))
    with pytest.raises(ImageDimensionsTooLargeError) as caught:
        await client.messages.count_tokens(model=MODEL, messages=many)
    assert caught.value.api_message.endswith("exceed max allowed size for many-image requests: 2000 pixels")
    assert caught.value.details.paths == ["messages.0.content.20"]
    within = ask(*[image_block(png_bytes(2000, 2000))] * 21)
    assert (
        (await client.messages.count_tokens(model=MODEL, messages=within)).input_tokens
        == count_input_tokens({"messages": within})
        > 21 * 1500
    )


async def test_url_sources_are_served_from_the_fakes_urls(fake, client):
    fake.urls["https://example.com/cat.webp"] = webp_bytes(300, 250)
    fake.urls["https://example.com/report.pdf"] = pdf_bytes(2)
    messages = ask(
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}},
    )
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert (
        message.usage.input_tokens
        == fake.count_input_tokens(fake.requests[0].body)
        == (
            REQUEST_OVERHEAD_TOKENS
            + MESSAGE_OVERHEAD_TOKENS
            + image_tokens(300, 250)
            + 2 * pdf_page_tokens("Page 1 of a test document.")
            + math.ceil(len("What is in this?") / 4)
        )
    )
    fake.urls["https://example.com/notes.txt"] = b"not an image"
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model=MODEL,
            max_tokens=10,
            messages=ask({"type": "image", "source": {"type": "url", "url": "https://example.com/notes.txt"}}),
        )
    assert caught.value.api_message == "Could not process image"


async def test_an_image_in_a_tool_result_is_validated_with_its_path(client):
    messages = [
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "shot", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": [raw_image("image/png", "%%%")]}],
        },
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=messages)
    assert (
        caught.value.api_message
        == "messages.2.content.0.tool_result.content.0.image.source.base64: invalid base64 data"
    )


# --- documents ---


def test_pdf_helper_makes_a_valid_pdf_with_that_many_pages():
    pdf = pdf_bytes(5, "Page {page} (of five) \\ done")
    assert pdf.startswith(b"%PDF-1.4") and pdf.endswith(b"%%EOF\n")
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 5 and b"/Type /Pages /Kids" in pdf and b"/Count 5" in pdf
    assert pdf_page_texts(pdf) == (len("Page 1 (of five) \\ done"),) * 5
    start = int(re.search(rb"startxref\n(\d+)", pdf)[1])
    table = pdf[start:].split(b"\n")
    assert table[0] == b"xref" and table[1] == b"0 14"  # catalog, page tree, font, 5 pages and 5 contents
    for number, entry in enumerate(table[3:16], 1):  # every xref offset points at its object
        offset = int(entry[:10])
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    padded = pdf_bytes(2, min_bytes=50_000)
    assert len(padded) >= 50_000 and pdf_page_texts(padded) == (26, 26)
    assert pdf_page_tokens("x" * 400) == 1600 and pdf_page_tokens("x" * 40_000) == 3000 and pdf_page_tokens("") == 1500


async def test_document_tokens_count_per_page_and_for_text(fake, client):
    pdf = document_block(pdf_bytes(3, "w" * 400), title="Report", context="Q3 numbers")
    text = document_block("The quick brown fox. " * 10, title="Notes", citations=True)
    messages = ask(pdf, text, question="Summarize")
    counted = await client.messages.count_tokens(model=MODEL, messages=messages)
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=messages)
    expected = (
        REQUEST_OVERHEAD_TOKENS
        + MESSAGE_OVERHEAD_TOKENS
        + 3 * (1500 + 100)
        + 2
        + 3
        + math.ceil(210 / 4)
        + 2
        + math.ceil(len("Summarize") / 4)
    )
    assert counted.input_tokens == message.usage.input_tokens == expected
    assert message.content[0].text == "You said: Summarize"


def raw_pdf(data: bytes, media_type: str = "application/pdf") -> dict:
    return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": b64(data)}}


@pytest.mark.parametrize(
    "blocks, message",
    [
        (
            [raw_pdf(b"<html>not a pdf</html>")],
            "messages.0.content.0.pdf.source.base64.data: The PDF specified was not valid.",
        ),
        (
            [raw_pdf(b"%PDF-1.4\n%%EOF\n")],
            "messages.0.content.0.pdf.source.base64.data: The PDF specified was not valid.",
        ),
        (
            [raw_pdf(pdf_bytes(1), "application/x-pdf")],
            "messages.0.content.0.document.source.base64.media_type: Input should be 'application/pdf'",
        ),
        (
            [{"type": "document", "source": {"type": "text", "media_type": "text/markdown", "data": "# hi"}}],
            "messages.0.content.0.document.source.text.media_type: Input should be 'text/plain'",
        ),
        (
            [raw_pdf(pdf_bytes(101))],
            "messages.0.content.0.pdf.source.base64.data: A maximum of 100 PDF pages may be provided.",
        ),
        (
            [raw_pdf(pdf_bytes(60)), raw_pdf(pdf_bytes(41))],  # the limit is for the request, all PDFs together
            "messages.0.content.1.pdf.source.base64.data: A maximum of 100 PDF pages may be provided.",
        ),
    ],
)
async def test_documents_are_validated_like_the_api(client, blocks, message):
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=ask(*blocks))
    assert caught.value.api_message == message


async def test_a_hundred_pages_are_accepted_and_larger_models_take_more(client):
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=ask(raw_pdf(pdf_bytes(100))))
    assert message.usage.input_tokens > 100 * 1500
    async with FakeAnthropic(max_pdf_pages=600) as large:
        other = anthropic.AsyncAnthropic(api_key="test", base_url=large.base_url, max_retries=0)
        counted = await other.messages.count_tokens(model=MODEL, messages=ask(raw_pdf(pdf_bytes(101))))
        assert counted.input_tokens > 101 * 1500
        await other.close()


@pytest.mark.parametrize(
    "make_block",
    [
        lambda: document_block(pdf_bytes(2), cache_control={"type": "ephemeral"}),
        lambda: image_block(png_bytes(400, 300), cache_control={"type": "ephemeral"}),
    ],
)
async def test_a_cached_pdf_or_image_is_read_from_the_cache_next_time(fake, client, make_block):
    usages = []
    for question in ("What does it say?", "And in short?"):
        message = await client.messages.create(
            model=MODEL, max_tokens=50, messages=ask(make_block(), question=question)
        )
        usages.append(message.usage)
    written = usages[0].cache_creation_input_tokens
    assert written > 50 and usages[0].cache_read_input_tokens == 0
    assert usages[1].cache_read_input_tokens == written and usages[1].cache_creation_input_tokens == 0
    assert usages[1].input_tokens == count_input_tokens(fake.requests[1].body) - written
    assert written == count_input_tokens({"messages": [{"role": "user", "content": [make_block()]}]})


# --- request size ---


async def test_a_request_over_32_mib_is_refused_with_413(fake, client):
    huge = ask(document_block(pdf_bytes(1, min_bytes=25 * 1024 * 1024)))  # 33 MiB of base64
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=huge)
    error = caught.value
    assert error.status_code == 413 and error.type == "request_too_large"
    assert error.body == {"error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}}
    assert fake.requests[0].size > MAX_REQUEST_BYTES and fake.requests[0].status == 413
    with pytest.raises(anthropic.ContentTooLargeError):
        await client.messages.count_tokens(model=MODEL, messages=huge)


async def test_the_limit_is_on_the_body_bytes(fake, client):
    fake.max_request_bytes = 2000
    await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x" * 1800}])
    with pytest.raises(anthropic.ContentTooLargeError):
        await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x" * 2000}])
    assert fake.requests[0].size <= 2000 < fake.requests[1].size


# --- web search ---

SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
PYTHON_SEARCH = {
    "query": "current stable Python version",
    "results": [
        {"url": "https://www.python.org/doc/versions/", "title": "Python versions", "page_age": "March 12, 2026"},
        {"url": "https://en.wikipedia.org/wiki/Python", "title": "Python - Wikipedia"},
    ],
}
CITED_ANSWER = [
    "Based on the search, ",
    {
        "text": "the current stable version is 3.14.7.",
        "citations": [
            {"url": "https://www.python.org/doc/versions/", "cited_text": "Python 3.14.7, released on 5 August 2026"}
        ],
    },
]


async def test_web_search_streams_like_the_api(fake):
    fake.enqueue(Script(searches=[PYTHON_SEARCH], text=CITED_ANSWER, delta_chars=10))
    status, _, raw = await post(
        fake,
        "/v1/messages",
        {"model": MODEL, "max_tokens": 200, "stream": True, "tools": [SEARCH_TOOL], "messages": QUESTION},
    )
    assert status == 200
    events = [(name, json.loads(data)) for name, data in sse_events(raw)]
    shape = []
    for name, data in events:
        if name == "content_block_start":
            shape.append(f"start {data['content_block']['type']}")
        elif name == "content_block_delta":
            shape.append(data["delta"]["type"])
        else:
            shape.append(name)
    compact = [k for i, k in enumerate(shape) if i == 0 or k != shape[i - 1]]
    assert compact == [
        "message_start",
        "start server_tool_use",
        "ping",
        "input_json_delta",
        "content_block_stop",
        "start web_search_tool_result",
        "content_block_stop",
        "start text",
        "text_delta",
        "content_block_stop",
        "start text",
        "citations_delta",
        "text_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2, 3]
    tool_use = starts[0]["content_block"]
    assert tool_use["id"].startswith("srvtoolu_01") and tool_use["name"] == "web_search" and tool_use["input"] == {}
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta" and d["index"] == 0]
    assert partial[0] == "" and json.loads("".join(partial)) == {"query": "current stable Python version"}
    result = starts[1]["content_block"]
    assert result["tool_use_id"] == tool_use["id"] and result["caller"] == {"type": "direct"}
    assert [(r["type"], r["url"], r["title"], r["page_age"]) for r in result["content"]] == [
        ("web_search_result", "https://www.python.org/doc/versions/", "Python versions", "March 12, 2026"),
        ("web_search_result", "https://en.wikipedia.org/wiki/Python", "Python - Wikipedia", None),
    ]
    assert all(base64.b64decode(r["encrypted_content"]) for r in result["content"])
    assert starts[2]["content_block"] == {"type": "text", "text": ""}
    assert starts[3]["content_block"] == {"citations": [], "type": "text", "text": ""}
    citation = next(d["delta"]["citation"] for n, d in events if d.get("delta", {}).get("type") == "citations_delta")
    assert citation["type"] == "web_search_result_location" and citation["title"] == "Python versions"
    assert citation["cited_text"] == "Python 3.14.7, released on 5 August 2026" and citation["encrypted_index"]
    start_usage = events[0][1]["message"]["usage"]
    final_usage = next(d for n, d in events if n == "message_delta")["usage"]
    assert "server_tool_use" not in start_usage
    assert final_usage["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    read = sum(math.ceil(len(json.dumps(r, sort_keys=True)) / 4) for r in result["content"])
    assert final_usage["input_tokens"] == start_usage["input_tokens"] + read  # the model read what it found
    written = "".join(partial) + "Based on the search, the current stable version is 3.14.7."
    assert final_usage["output_tokens"] == math.ceil(len(written) / 4)
    assert fake.requests[0].usage == dict(final_usage.items()) | {
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    }


async def test_the_sdk_parses_a_web_search_stream(fake, client):
    fake.enqueue(
        Script(searches=[{**PYTHON_SEARCH, "preamble": "Let me check."}], text=CITED_ANSWER),
        Script(searches=[PYTHON_SEARCH], text=CITED_ANSWER),
    )
    raw = await client.messages.create(model=MODEL, max_tokens=200, tools=[SEARCH_TOOL], messages=QUESTION, stream=True)
    events = [event async for event in raw]
    assert [e.content_block.type for e in events if e.type == "content_block_start"] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
        "text",
    ]
    assert [e.delta.type for e in events if e.type == "content_block_delta"].count("citations_delta") == 1
    assert events[-2].usage.server_tool_use.web_search_requests == 1

    async with client.messages.stream(model=MODEL, max_tokens=200, tools=[SEARCH_TOOL], messages=QUESTION) as stream:
        text = "".join([delta async for delta in stream.text_stream])
        message = await stream.get_final_message()
    assert text == "Based on the search, the current stable version is 3.14.7."
    assert [block.type for block in message.content] == ["server_tool_use", "web_search_tool_result", "text", "text"]
    assert message.content[0].input == {"query": "current stable Python version"}
    assert message.content[1].tool_use_id == message.content[0].id
    assert [r.url for r in message.content[1].content] == [
        "https://www.python.org/doc/versions/",
        "https://en.wikipedia.org/wiki/Python",
    ]
    assert message.content[2].citations is None
    [citation] = message.content[3].citations
    assert citation.url == "https://www.python.org/doc/versions/" and citation.title == "Python versions"
    assert message.usage.server_tool_use.web_search_requests == 1
    assert (
        message.usage.input_tokens == fake.requests[1].usage["input_tokens"] > count_input_tokens(fake.requests[1].body)
    )
    assert message.stop_reason == "end_turn"


async def test_web_search_beyond_max_uses_gets_the_error_result(fake, client):
    searches = [
        {"query": f"question {n}", "results": [{"url": f"https://example.com/{n}", "title": f"Page {n}"}]}
        for n in range(3)
    ]
    fake.enqueue(
        Script(searches=searches, text="Found enough."),
        Script(searches=[{"query": "down", "error_code": "unavailable"}], text="Search is down."),
    )
    tool = {**SEARCH_TOOL, "max_uses": 2}
    message = await client.messages.create(model=MODEL, max_tokens=200, tools=[tool], messages=QUESTION)
    results = [block for block in message.content if block.type == "web_search_tool_result"]
    assert [type(r.content).__name__ for r in results] == ["list", "list", "WebSearchToolResultErrorObject"]
    assert results[2].content.error_code == "max_uses_exceeded"
    assert fake.requests[0].text == "Found enough."
    assert message.usage.server_tool_use.web_search_requests == 2

    async with client.messages.stream(model=MODEL, max_tokens=200, tools=[tool], messages=QUESTION) as stream:
        message = await stream.get_final_message()
    assert message.content[1].content.error_code == "unavailable"
    assert message.usage.server_tool_use.web_search_requests == 0


async def test_searches_need_the_tool_in_the_request(fake, client):
    fake.enqueue(Script(searches=[PYTHON_SEARCH], text=CITED_ANSWER))
    message = await client.messages.create(model=MODEL, max_tokens=200, messages=QUESTION)
    assert [block.type for block in message.content] == ["text", "text"]
    assert message.content[1].citations is None and message.usage.server_tool_use is None


@pytest.mark.parametrize(
    "tool, message",
    [
        (
            {"type": "web_search_20250305", "name": "search"},
            "tools.0.web_search_20250305.name: Input should be 'web_search'",
        ),
        ({**SEARCH_TOOL, "max_uses": 0}, "tools.0.web_search_20250305.max_uses: Input should be greater than 0"),
        (
            {**SEARCH_TOOL, "user_location": {"type": "exact"}},
            "tools.0.web_search_20250305.user_location.type: Input should be 'approximate'",
        ),
        (
            {"type": "web_search_20990101", "name": "web_search"},
            "tools.0: Input tag 'web_search_20990101' found using 'type' does not match any of the expected tags: ",
        ),
        ({"name": "lookup"}, "tools.0.custom.input_schema: Field required"),
    ],
)
async def test_tools_are_validated(client, tool, message):
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, tools=[tool], messages=QUESTION)
    assert caught.value.api_message.startswith(message)


async def test_faults_and_max_tokens_still_apply_after_a_search(fake, client):
    fake.enqueue(
        Script(searches=[PYTHON_SEARCH], text="one two three four", delta_chars=4, error_after_deltas=2),
        Script(searches=[PYTHON_SEARCH], text="word " * 100),
    )
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(
            model=MODEL, max_tokens=100, tools=[SEARCH_TOOL], messages=QUESTION
        ) as stream:
            async for event in stream:
                seen.append(event.type)
    assert caught.value.status_code == 200 and fake.requests[0].deltas_sent == 2
    assert fake.requests[0].usage["server_tool_use"]["web_search_requests"] == 1
    message = await client.messages.create(model=MODEL, max_tokens=20, tools=[SEARCH_TOOL], messages=QUESTION)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 20
    assert len(json.dumps(message.content[0].input)) + len(message.content[2].text) == 80


def test_script_refuses_citations_of_pages_no_search_found():
    with pytest.raises(ValueError, match="no scripted search returns"):
        Script(searches=[PYTHON_SEARCH], text=[{"text": "x", "citations": [{"url": "https://elsewhere.example/"}]}])
    with pytest.raises(TypeError):
        Script(searches=[{"results": []}])
    Script(
        text=[
            {
                "text": "From the PDF.",
                "citations": [
                    {
                        "type": "page_location",
                        "cited_text": "x",
                        "document_index": 0,
                        "document_title": None,
                        "start_page_number": 1,
                        "end_page_number": 2,
                    }
                ],
            }
        ]
    )
