"""The fake Anthropic API, driven by the real SDK: if these pass, the SDK parses what the fake sends."""

from __future__ import annotations

import json
import math
import time

import aiohttp
import anthropic
import httpx2
import pytest

from tests.fakes.anthropic import FakeAnthropic, Script, count_input_tokens, split_deltas

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
    async with aiohttp.ClientSession() as session, session.post(fake.base_url + path, json=body, headers=headers) as resp:
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
    status, headers, raw = await post(fake, "/v1/messages", {"model": MODEL, "max_tokens": 50, "stream": True,
                                                             "messages": QUESTION})
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
        delta["usage"])


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
        body = {"model": MODEL, "max_tokens": 100, "system": system,
                "messages": [{"role": "user", "content": question}]}
        async with client.messages.stream(**body) as stream:
            usages.append((await stream.get_final_message()).usage)
    prefix = usages[0].cache_creation_input_tokens
    assert prefix > 50 and usages[0].cache_read_input_tokens == 0
    assert usages[0].cache_creation.ephemeral_5m_input_tokens == prefix
    assert usages[1].cache_read_input_tokens == prefix and usages[1].cache_creation_input_tokens == 0
    total = count_input_tokens(fake.requests[1].body)
    assert usages[1].input_tokens == total - prefix > 0

    # Another model has its own cache.
    async with client.messages.stream(model="claude-haiku-4-5", max_tokens=100, system=system,
                                      messages=QUESTION) as stream:
        other = (await stream.get_final_message()).usage
    assert other.cache_read_input_tokens == 0 and other.cache_creation_input_tokens == prefix


async def test_moved_breakpoint_reads_the_earlier_prefix_and_writes_the_rest(fake, client):
    system = "Background facts about the workspace. " * 10
    turn1 = [{"role": "user", "content": [{"type": "text", "text": "hello " * 40,
                                           "cache_control": {"type": "ephemeral"}}]}]
    turn2 = [{"role": "user", "content": [{"type": "text", "text": "hello " * 40}]},
             {"role": "assistant", "content": "Hi! How can I help?"},
             {"role": "user", "content": [{"type": "text", "text": "tell me more " * 10,
                                           "cache_control": {"type": "ephemeral"}}]}]
    first = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=turn1)
    second = await client.messages.create(model=MODEL, max_tokens=50, system=system, messages=turn2)
    written = first.usage.cache_creation_input_tokens
    assert written == count_input_tokens({"system": system, "messages": turn1}) and first.usage.input_tokens == 0
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == count_input_tokens(
        {"system": system, "messages": turn2}) - written


async def test_prefix_below_the_minimum_is_not_cached(client):
    async with FakeAnthropic() as strict:  # default minimum: 1024 tokens
        small = anthropic.AsyncAnthropic(api_key="test", base_url=strict.base_url, max_retries=0)
        for _ in range(2):
            message = await small.messages.create(model=MODEL, max_tokens=50, system=cached_system("short " * 50),
                                                  messages=QUESTION)
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
    status, _, raw = await post(fake, "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": QUESTION},
                                headers={"anthropic-version": "2023-06-01"})
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
