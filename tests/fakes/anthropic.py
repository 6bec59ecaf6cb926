"""A local stand-in for Anthropic's Messages API, reached by the real SDK via `AsyncAnthropic(base_url=...)`.

The SDK is built on `httpx2`, which `respx` cannot intercept, so this is an in-process aiohttp server
speaking the real wire format (SSE events, error bodies, `request-id` headers): the app's client code,
the SDK's parser and its exceptions are all exercised for real. Token counts are deterministic
(`count_input_tokens`, `output_tokens`), so tests can assert exact usage, prompt caching included.

Besides text it takes what users attach, validated as the API validates it:

- image blocks (`png_bytes`, `jpeg_bytes`, `gif_bytes`, `webp_bytes` make test images of any size;
  `image_block` wraps bytes into a block); tokens per image: `image_tokens(width, height)`;
- document blocks: PDFs (`pdf_bytes(pages)`, `document_block`), plain text and content sources;
  tokens per PDF page: `pdf_page_tokens(text)`;
- URL sources, served from `FakeAnthropic.urls` (the fake fetches nothing from the network);
- the server-side web search tool, played by `Script(searches=[...])`: `server_tool_use` and
  `web_search_tool_result` blocks, text with `web_search_result_location` citations, and
  `usage.server_tool_use.web_search_requests`.

A request body over 32 MiB is a 413 `request_too_large`, as from the API's front door.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import math
import re
import secrets
import string
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    413: "Request exceeds the maximum size",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}
REQUEST_OVERHEAD_TOKENS = 4  # the API counts a few tokens for the prompt's framing, even for "Hi"
MESSAGE_OVERHEAD_TOKENS = 3  # role markers per message
CACHE_LOOKBACK_BLOCKS = 20  # the API checks for hits this many block boundaries back from each breakpoint
MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = {"5m": 300.0, "1h": 3600.0}

MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the Messages API's (and count_tokens') request size limit

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # per image, measured on the base64 string as the API measures it
MAX_IMAGE_SIDE = 8000
MANY_IMAGES = 20  # with more images than this in one request, each side may be at most...
MANY_IMAGES_MAX_SIDE = 2000
IMAGE_MAX_LONG_EDGE = 1568  # larger images are scaled down (aspect kept) before they are counted...
IMAGE_MAX_TOKENS = 1600  # ...as are images of more than about this many tokens

MAX_PDF_PAGES = 100  # per request, all PDFs together (models with a 1M context take more: see FakeAnthropic)
PDF_PAGE_BASE_TOKENS = 1500  # a page's image; the page's text comes on top...
PDF_PAGE_MAX_TOKENS = 3000  # ...up to this much per page

WEB_SEARCH_TOOL_TYPES = ("web_search_20250305", "web_search_20260209", "web_search_20260318")
WEB_SEARCH_ERROR_CODES = (
    "invalid_tool_input",
    "unavailable",
    "max_uses_exceeded",
    "too_many_requests",
    "query_too_long",
    "request_too_large",
)
# Every tool `type` the SDK's ToolUnionParam knows; other server tools are accepted but never run here.
KNOWN_TOOL_TYPES = (
    "custom",
    "bash_20250124",
    "code_execution_20250522",
    "code_execution_20250825",
    "code_execution_20260120",
    "code_execution_20260521",
    "browser_toolset_20260801",
    "memory_20250818",
    "computer_toolset_20260801",
    "text_editor_20250124",
    "text_editor_20250429",
    "text_editor_20250728",
    *WEB_SEARCH_TOOL_TYPES,
    "web_fetch_20250910",
    "web_fetch_20260209",
    "web_fetch_20260309",
    "web_fetch_20260318",
    "tool_search_tool_bm25_20251119",
    "tool_search_tool_bm25",
    "tool_search_tool_regex_20251119",
    "tool_search_tool_regex",
)


@dataclass
class Script:
    """What the next /v1/messages request gets.

    `text` is the answer: a string (one text block), or a list of parts, each a string or
    `{"text": ..., "citations": [...]}`, one text block each. A citation is
    `{"url": ..., "cited_text"?: ..., "title"?: ..., "encrypted_index"?: ...}` naming a result of one of
    the `searches` (title defaults to that result's, cited_text to the part's first 150 characters);
    a citation with another `type` (`char_location`, `page_location`, ...) is passed through as given.

    `searches` play the server-side web search tool, in order, before the answer:
    `{"query": ..., "results": [{"url", "title", "page_age"?, "encrypted_content"?}, ...]}`, optionally
    `"preamble": "I'll look that up."` (a text block before the search) or `"error_code": "unavailable"`
    (an error result). They happen only if the request declares a web_search tool (the model cannot call
    a tool it was not given; web citations are then dropped too), and searches beyond its `max_uses` get
    the `max_uses_exceeded` error result, as the API answers. Like the API, the final usage counts what the
    model read: its input_tokens exceed message_start's by ceil(len(JSON of the result, sorted keys) / 4) per
    search result, and `server_tool_use.web_search_requests` counts the searches that ran (not errors).
    """

    text: str | list[str | dict] | None = None  # None: "You said: <last user message>"
    delta_chars: int = 12
    delay: float = 0.0
    first_delay: float | None = None  # None: same as `delay`
    stop_reason: str = "end_turn"
    http_error: int | None = None
    retry_after: int | None = None
    error_after_deltas: int | None = None  # counts text deltas
    drop_after_deltas: int | None = None
    end_without_stop_after_deltas: int | None = None
    usage: dict | None = None
    searches: list[dict] = field(default_factory=list)
    search_delay: float = 0.0  # the pause while each search runs, before its result block

    def __post_init__(self) -> None:
        urls = set()
        for search in self.searches:
            if not isinstance(search, dict) or not isinstance(search.get("query"), str):
                raise TypeError(f"a search needs a 'query' string: {search!r}")
            if search.get("error_code") not in (None, *WEB_SEARCH_ERROR_CODES):
                raise ValueError(f"unknown web search error_code {search['error_code']!r}")
            for result in search.get("results") or []:
                if (
                    not isinstance(result, dict)
                    or not isinstance(result.get("url"), str)
                    or not isinstance(result.get("title"), str)
                ):
                    raise TypeError(f"a search result needs 'url' and 'title' strings: {result!r}")
                urls.add(result["url"])
        for part in self.text if isinstance(self.text, list) else []:
            if isinstance(part, str):
                continue
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                raise TypeError(f"a text part is a string or {{'text': ..., 'citations': [...]}}: {part!r}")
            for citation in part.get("citations") or []:
                if citation.get("type", "web_search_result_location") == "web_search_result_location" and (
                    citation.get("url") not in urls
                ):
                    raise ValueError(f"citation of {citation.get('url')!r}, which no scripted search returns")


@dataclass
class Received:
    body: dict
    headers: dict  # lower-cased names
    at: float  # time.monotonic() on arrival
    request_id: str
    path: str = "/v1/messages"
    status: int = 200
    script: Script | None = None
    cancelled: bool = False  # the client went away before the answer was complete
    deltas_sent: int = 0  # text deltas
    usage: dict = field(default_factory=dict)  # what was reported (or, if cancelled, what was generated)
    text: str = ""  # the text streamed so far (whole text for non-streaming), all text blocks joined
    size: int = 0  # bytes of the request body


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, details: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers, self.details = status, message, headers or {}, details


def _random_id(prefix: str, n: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _opaque(seed: str) -> str:
    """A stand-in for the API's encrypted blobs: base64, stable for the same seed."""
    return base64.b64encode(hashlib.sha256(seed.encode()).digest() * 3).decode()


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


# --- images and documents ---


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, min_bytes: int = 0) -> bytes:
    """A valid black PNG (1-bit grayscale, zlib-compressed IDAT), padded by a private chunk to `min_bytes`."""
    if width < 1 or height < 1:
        raise ValueError("width and height must be at least 1")
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed pixels
    compressor = zlib.compressobj(9)
    rows_per_batch = max(1, (1 << 20) // len(row))
    idat = (
        b"".join(compressor.compress(row * min(rows_per_batch, height - y)) for y in range(0, height, rows_per_batch))
        + compressor.flush()
    )
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    tail = _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    fill = min_bytes - len(head) - len(tail) - 12
    return head + (_png_chunk(b"fiLl", b"\x00" * fill) if fill >= 0 else b"") + tail


def jpeg_bytes(width: int, height: int, *, min_bytes: int = 0) -> bytes:
    """A valid mid-grey baseline JPEG (grayscale; every 8x8 block is DC difference 0, then end of block)."""
    if not (1 <= width <= 65535 and 1 <= height <= 65535):
        raise ValueError("JPEG sides are 1..65535")

    def segment(marker: int, data: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(data) + 2) + data

    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    bits = 2 * blocks  # one 1-bit code "0" for the DC difference, one for the end of block
    scan = b"\x00" * (bits // 8) + (bytes([0xFF >> (bits % 8)]) if bits % 8 else b"")  # pad with 1 bits
    scan = scan.replace(b"\xff", b"\xff\x00")  # byte stuffing
    head = (
        b"\xff\xd8"
        + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
        + segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")  # DC table 0: one code, category 0
        + segment(0xC4, b"\x10" + b"\x01" + b"\x00" * 15 + b"\x00")  # AC table 0: one code, end of block
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    )
    fill = min_bytes - len(head) - len(scan) - 2 - 4
    comment = b""
    while fill >= 0:  # COM segments carry at most 65533 bytes each
        n = min(fill, 65533)
        comment += segment(0xFE, b"\x00" * n)
        fill -= n + 4
    return head[:2] + comment + head[2:] + scan + b"\xff\xd9"


class _Bits:
    """An LSB-first bit writer (GIF's LZW codes, WebP's lossless bitstream)."""

    def __init__(self) -> None:
        self.value, self.count = 0, 0

    def write(self, value: int, bits: int) -> None:
        self.value |= value << self.count
        self.count += bits

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def gif_bytes(width: int, height: int) -> bytes:
    """A valid black GIF: LZW data for a run of one colour, the dictionary cleared before it fills up."""
    if not (1 <= width <= 65535 and 1 <= height <= 65535):
        raise ValueError("GIF sides are 1..65535")
    clear, end, first = 4, 5, 6  # minimum code size 2
    bits, remaining = _Bits(), width * height

    def put(code: int, k: int) -> None:  # the k-th code since the last clear: as wide as the decoder expects
        bits.write(code, min(12, max(3, (first + max(0, k - 2)).bit_length())))

    k = 0
    while remaining:
        put(clear, k + 1 if k else 1)
        k = 1
        while remaining and first + k < 4000:  # the k-th code is a run of k pixels: code 0, then 6, 7, ...
            run = min(k, remaining)
            put(0 if run == 1 else first + run - 2, k)
            remaining -= run
            k += 1
    put(end, k)
    data = bits.bytes()
    blocks = b"".join(bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255))
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02"
        + blocks
        + b"\x00;"
    )


def webp_bytes(width: int, height: int) -> bytes:
    """A valid black lossless WebP (VP8L: five one-symbol prefix codes, so the pixels take no bits)."""
    if not (1 <= width <= 16384 and 1 <= height <= 16384):
        raise ValueError("lossless WebP sides are 1..16384")
    bits = _Bits()
    bits.write(width - 1, 14)
    bits.write(height - 1, 14)
    bits.write(0, 1 + 3)  # alpha hint, version 0
    bits.write(0, 1 + 1 + 1)  # no transform, no colour cache, no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance: a simple code with one symbol each
        bits.write(1, 1)
        bits.write(0, 1)
        if symbol < 2:
            bits.write(0, 1)
            bits.write(symbol, 1)
        else:
            bits.write(1, 1)
            bits.write(symbol, 8)
    data = b"\x2f" + bits.bytes()
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def pdf_bytes(pages: int, text_per_page: str = "Page {page} of a test document.", *, min_bytes: int = 0) -> bytes:
    """A minimal valid PDF (catalog, page tree, one Helvetica text line per page, xref table).

    `{page}` in `text_per_page` is replaced by the page number. Text is written as Latin-1 (other characters
    become '?'). `min_bytes` pads the file with an unreferenced stream object."""
    if pages < 1:
        raise ValueError("a PDF has at least one page")
    kids = " ".join(f"{4 + 2 * n} 0 R" for n in range(pages))
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    for n in range(pages):
        text = text_per_page.replace("{page}", str(n + 1)).encode("latin-1", "replace")
        text = text.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        stream = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
        objects[4 + 2 * n] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * n)
        )
        objects[5 + 2 * n] = b"<< /Length %d >>\nstream\n%b\nendstream" % (len(stream), stream)

    def build() -> bytes:
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number in sorted(objects):
            offsets.append(len(out))
            out += b"%d 0 obj\n%b\nendobj\n" % (number, objects[number])
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
        return bytes(out)

    pdf = build()
    if len(pdf) < min_bytes:
        fill = min_bytes - len(pdf)
        objects[4 + 2 * pages] = b"<< /Length %d >>\nstream\n%b\nendstream" % (fill, b"\x00" * fill)
        pdf = build()
    return pdf


def image_block(data: bytes, media_type: str | None = None, *, cache_control: dict | None = None) -> dict:
    """An image content block carrying `data` as base64; the media type is detected unless given."""
    source = {
        "type": "base64",
        "media_type": media_type or _detect_image(data) or "image/png",
        "data": base64.b64encode(data).decode(),
    }
    block: dict = {"type": "image", "source": source}
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def document_block(
    data: bytes | str,
    *,
    title: str | None = None,
    context: str | None = None,
    citations: bool | None = None,
    cache_control: dict | None = None,
) -> dict:
    """A document block: a PDF for bytes, a plain-text document for a string."""
    if isinstance(data, str):
        source = {"type": "text", "media_type": "text/plain", "data": data}
    else:
        source = {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(data).decode()}
    block: dict = {"type": "document", "source": source}
    for name, value in (("title", title), ("context", context), ("cache_control", cache_control)):
        if value is not None:
            block[name] = value
    if citations is not None:
        block["citations"] = {"enabled": citations}
    return block


def image_tokens(width: int, height: int) -> int:
    """Input tokens of an image: ceil(width * height / 750), after the API's downscaling of large images
    (long edge above 1568 px, or above about 1600 tokens: scaled down, aspect ratio kept)."""
    scale = min(1.0, IMAGE_MAX_LONG_EDGE / max(width, height), math.sqrt(IMAGE_MAX_TOKENS * 750 / (width * height)))
    if scale < 1:
        width, height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    return math.ceil(width * height / 750)


def pdf_page_tokens(text: str | int) -> int:
    """Input tokens of a PDF page: 1500 for its image plus ceil(chars / 4) for its text, at most 3000."""
    chars = text if isinstance(text, int) else len(text)
    return min(PDF_PAGE_MAX_TOKENS, PDF_PAGE_BASE_TOKENS + _tokens(chars))


def _detect_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR, GIF screen descriptor, JPEG SOF marker or WebP VP8/VP8L/VP8X header."""
    kind = _detect_image(data)
    try:
        if kind == "image/png":
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if kind == "image/gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "image/jpeg":
            i = 2
            while i + 4 <= len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker == 0xFF:  # fill byte
                    i += 1
                elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
                    i += 2
                elif marker in _JPEG_SOF:
                    height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                    return width, height
                elif marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
                    return None
                else:
                    i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
            return None
        if kind == "image/webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
            if chunk == b"VP8L" and data[20] == 0x2F:
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            return None
    except (struct.error, IndexError):
        return None
    return None


@functools.lru_cache(maxsize=32)
def _decode(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=32)
def _digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


_PDF_OBJECT = re.compile(rb"(\d+)\s+\d+\s+obj\b(.*?)\bendobj\b", re.DOTALL)
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")  # a page object, not the /Pages tree
_PDF_CONTENTS = re.compile(rb"/Contents\s*(?:(\d+)\s+\d+\s+R|\[([^\]]*)\])")
_PDF_STRING = re.compile(rb"\((?:\\.|[^\\()])*\)", re.DOTALL)


def _pdf_stream(obj: bytes) -> bytes:
    start = re.search(rb"stream\r?\n", obj)
    end = obj.rfind(b"endstream")
    if start is None or end < start.end():
        return b""
    data = obj[start.end() : end]
    if b"/FlateDecode" in obj[: start.start()]:
        try:
            data = zlib.decompress(data)
        except zlib.error:
            return b""
    return data


@functools.lru_cache(maxsize=16)
def pdf_page_texts(data: bytes) -> tuple[int, ...]:
    """Characters of text on each page (literal strings of its content streams), one entry per
    `/Type /Page` object; pages whose text cannot be read (e.g. in compressed object streams) count 0."""
    objects = {int(m[1]): m[2] for m in _PDF_OBJECT.finditer(data)}
    texts = []
    for body in objects.values():
        if not _PDF_PAGE.search(body):
            continue
        contents = _PDF_CONTENTS.search(body)
        refs = (
            []
            if contents is None
            else [int(contents[1])]
            if contents[1]
            else [int(ref) for ref in re.findall(rb"(\d+)\s+\d+\s+R", contents[2])]
        )
        chars = 0
        for ref in refs:
            for literal in _PDF_STRING.findall(_pdf_stream(objects.get(ref, b""))):
                chars += len(re.sub(rb"\\(.)", rb"\1", literal[1:-1], flags=re.DOTALL))
        texts.append(chars)
    texts += [0] * (len(_PDF_PAGE.findall(data)) - len(texts))
    return tuple(texts)


def _source_bytes(source: dict, urls: Mapping[str, bytes] | None) -> bytes | None:
    if source.get("type") == "url":
        return (urls or {}).get(source.get("url"))
    return _decode(source.get("data") or "")


def _media_tokens(block: dict, urls: Mapping[str, bytes] | None) -> int:
    source = block.get("source") or {}
    if block["type"] == "image":
        size = image_size(_source_bytes(source, urls) or b"")
        return image_tokens(*size) if size else 0
    tokens = _tokens(len(block.get("title") or "")) + _tokens(len(block.get("context") or ""))
    if source.get("type") in ("base64", "url"):
        return tokens + sum(pdf_page_tokens(chars) for chars in pdf_page_texts(_source_bytes(source, urls) or b""))
    if source.get("type") == "text":
        return tokens + _tokens(len(source.get("data") or ""))
    if source.get("type") == "content":
        content = source.get("content")
        inner = [content] if isinstance(content, str) else content or []
        return tokens + sum(_measure(part, urls)[1] for part in inner)
    return tokens


def _canonical_media(block: dict) -> dict:
    """The block as the cache sees it: base64 data by digest (hashing megabytes per block is pointless)."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        source = {**{k: v for k, v in source.items() if k != "data"}, "sha256": _digest(source["data"])}
    elif isinstance(source, dict) and source.get("type") == "content" and isinstance(source.get("content"), list):
        source = {**source, "content": [_measure(part, None)[0] for part in source["content"]]}
    return {**block, "source": source}


def _is_media(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in ("image", "document") and "source" in value


def _nested_media(value: Any, urls: Mapping[str, bytes] | None) -> tuple[Any, int]:
    """`value` with images and documents inside it (a tool_result's content) in canonical form, and their tokens."""
    if _is_media(value):
        plain = _strip_cache_control(value)
        return _canonical_media(plain), _media_tokens(plain, urls)
    if isinstance(value, dict):
        pairs = [(k, _nested_media(v, urls)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, sum(t for _, (_, t) in pairs)
    if isinstance(value, list):
        items = [_nested_media(v, urls) for v in value]
        return [v for v, _ in items], sum(t for _, t in items)
    return value, 0


def _strip_cache_control(block: Any) -> Any:
    # Moving a breakpoint must not change the prefix it marks, so cache_control is not part of it.
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def _measure(block: Any, urls: Mapping[str, bytes] | None) -> tuple[Any, int]:
    """A block's canonical form (what the prompt cache hashes) and its input tokens."""
    plain = _strip_cache_control(block)
    if isinstance(plain, str):
        plain = {"type": "text", "text": plain}
    if plain.get("type") == "text":
        return plain, _tokens(len(plain["text"]))
    if _is_media(plain):
        return _canonical_media(plain), _media_tokens(plain, urls)
    canonical, media = _nested_media(plain, urls)
    return canonical, _tokens(len(json.dumps(canonical, sort_keys=True))) + media


def _blocks(body: dict, urls: Mapping[str, bytes] | None = None) -> list[tuple[Any, int, dict | None]]:
    """The prompt in the API's cache order (tools, system, messages): (canonical part, tokens, cache_control)."""
    out: list[tuple[Any, int, dict | None]] = []

    def add(where: Any, block: Any, extra_tokens: int = 0) -> None:
        plain, tokens = _measure(block, urls)
        cc = block.get("cache_control") if isinstance(block, dict) else None
        out.append(([where, plain], tokens + extra_tokens, cc))

    for tool in body.get("tools") or []:
        add("tool", tool)
    system = body.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        add("system", block)
    for i, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        for j, block in enumerate([content] if isinstance(content, str) else content or []):
            add([i, message.get("role")], block, MESSAGE_OVERHEAD_TOKENS if j == 0 else 0)
    return out


def count_input_tokens(body: dict, urls: Mapping[str, bytes] | None = None) -> int:
    """Total input tokens of a request: ceil(chars/4) per text block (and per other block's JSON), images by
    `image_tokens`, PDFs by `pdf_page_tokens` per page, plus per-message and per-request overhead.
    `urls`: the content of URL sources (`FakeAnthropic.urls`)."""
    return REQUEST_OVERHEAD_TOKENS + sum(tokens for _, tokens, _ in _blocks(body, urls))


def output_tokens(text: str) -> int:
    return max(1, _tokens(len(text)))


def default_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return f"You said: {content}"
            return "You said: " + " ".join(
                b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type", "text") == "text"
            )
    return "Hello."


def split_deltas(text: str, size: int) -> list[str]:
    """Chunks of about `size` characters, cut after whitespace where possible; they join back to `text`."""
    chunks: list[str] = []
    current = ""
    for word in re.split(r"(?<=\s)(?=\S)", text):
        while len(word) > 2 * size:  # a very long word is cut anyway, like a tokenizer would
            if current:
                chunks.append(current)
                current = ""
            chunks.append(word[:size])
            word = word[size:]
        if current and len(current) + len(word) > size:
            chunks.append(current)
            current = ""
        current += word
    if current:
        chunks.append(current)
    return chunks


# --- validation ---


def _check_string(value: Any, where: str) -> str:
    if value is None:
        raise ApiError(400, f"{where}: Field required")
    if not isinstance(value, str):
        raise ApiError(400, f"{where}: Input should be a valid string")
    return value


def _check_image(path: str, block: dict, urls: Mapping[str, bytes] | None, max_side: int) -> tuple[str, bool]:
    """Raises for an image the API refuses; returns (its data's path, whether a side is over `max_side`)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise ApiError(400, f"{path}.image.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise ApiError(
                400,
                f"{path}.image.source.base64.media_type: Input should be 'image/jpeg', "
                f"'image/png', 'image/gif' or 'image/webp'",
            )
        data = _check_string(source.get("data"), f"{path}.image.source.base64.data")
        if not data:
            raise ApiError(400, f"{path}.image.source.base64: image cannot be empty")
        if len(data) > MAX_IMAGE_BYTES:
            raise ApiError(
                400,
                f"{path}.image.source.base64: image exceeds 5 MB maximum: {len(data)} bytes > {MAX_IMAGE_BYTES} bytes",
            )
        raw = _decode(data)
        if raw is None:
            raise ApiError(400, f"{path}.image.source.base64: invalid base64 data")
        where = f"{path}.image.source.base64.data"
    elif kind == "url":
        url = _check_string(source.get("url"), f"{path}.image.source.url.url")
        raw = (urls or {}).get(url)
        if raw is None:
            raise ApiError(
                400, f"{path}.image.source.url: Unable to download the file. Please verify the URL and try again."
            )
        media_type = _detect_image(raw)
        if media_type is None:
            raise ApiError(400, "Could not process image")
        if len(raw) > MAX_IMAGE_BYTES:
            raise ApiError(
                400, f"{path}.image.source.url: image exceeds 5 MB maximum: {len(raw)} bytes > {MAX_IMAGE_BYTES} bytes"
            )
        where = f"{path}.image.source.url"
    elif kind == "file":
        raise ApiError(400, f"{path}.image.source.file: FakeAnthropic does not implement the Files API")
    else:
        raise ApiError(
            400,
            f"{path}.image.source: Input tag '{kind}' found using 'type' does not match any of "
            f"the expected tags: 'base64', 'url', 'file'",
        )
    if _detect_image(raw) != media_type:
        raise ApiError(400, f"{where}: Image does not match the provided media type {media_type}")
    size = image_size(raw)
    if size is None or min(size) < 1:
        raise ApiError(400, "Could not process image")
    return where, max(size) > max_side


def _check_document(
    path: str, block: dict, urls: Mapping[str, bytes] | None, check_image: Callable[[str, dict], None]
) -> tuple[str, int]:
    """Raises for a document the API refuses; returns (its data's path, PDF pages) (0 pages: not a PDF)."""
    for name in ("title", "context"):
        if block.get(name) is not None:
            _check_string(block[name], f"{path}.document.{name}")
    citations = block.get("citations")
    if citations is not None and (
        not isinstance(citations, dict) or not isinstance(citations.get("enabled", False), bool)
    ):
        raise ApiError(400, f"{path}.document.citations.enabled: Input should be a valid boolean")
    source = block.get("source")
    if not isinstance(source, dict):
        raise ApiError(400, f"{path}.document.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise ApiError(400, f"{path}.document.source.base64.media_type: Input should be 'application/pdf'")
        data = _check_string(source.get("data"), f"{path}.document.source.base64.data")
        raw = _decode(data)
        if raw is None:
            raise ApiError(400, f"{path}.pdf.source.base64: invalid base64 data")
        where = f"{path}.pdf.source.base64.data"
    elif kind == "url":
        url = _check_string(source.get("url"), f"{path}.document.source.url.url")
        raw = (urls or {}).get(url)
        if raw is None:
            raise ApiError(
                400, f"{path}.pdf.source.url: Unable to download the file. Please verify the URL and try again."
            )
        where = f"{path}.pdf.source.url"
    elif kind == "text":
        if source.get("media_type") != "text/plain":
            raise ApiError(400, f"{path}.document.source.text.media_type: Input should be 'text/plain'")
        _check_string(source.get("data"), f"{path}.document.source.text.data")
        return "", 0
    elif kind == "content":
        content = source.get("content")
        if isinstance(content, list):
            for k, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    check_image(f"{path}.document.source.content.content.{k}", part)
                elif kind != "text":
                    raise ApiError(
                        400,
                        f"{path}.document.source.content.content.{k}: Input tag '{kind}' found "
                        f"using 'type' does not match any of the expected tags: 'text', 'image'",
                    )
        elif not isinstance(content, str):
            raise ApiError(400, f"{path}.document.source.content.content: Field required")
        return "", 0
    elif kind == "file":
        raise ApiError(400, f"{path}.document.source.file: FakeAnthropic does not implement the Files API")
    else:
        raise ApiError(
            400,
            f"{path}.document.source: Input tag '{kind}' found using 'type' does not match any "
            f"of the expected tags: 'base64', 'text', 'content', 'url', 'file'",
        )
    pages = len(pdf_page_texts(raw)) if raw.startswith(b"%PDF") else 0
    if not pages:
        raise ApiError(400, f"{where}: The PDF specified was not valid.")
    return where, pages


def _validate_media(body: dict, urls: Mapping[str, bytes] | None, max_pdf_pages: int) -> None:
    found: list[tuple[str, dict]] = []
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            path = f"messages.{i}.content.{j}"
            if isinstance(block, dict) and block.get("type") in ("image", "document"):
                found.append((path, block))
            elif (
                isinstance(block, dict)
                and block.get("type") == "tool_result"
                and isinstance(block.get("content"), list)
            ):
                found += [
                    (f"{path}.tool_result.content.{k}", inner)
                    for k, inner in enumerate(block["content"])
                    if isinstance(inner, dict) and inner.get("type") in ("image", "document")
                ]

    def images_in(block: dict) -> int:  # an image, or the images of a document's content source
        if block["type"] == "image":
            return 1
        source = block.get("source")
        content = source.get("content") if isinstance(source, dict) else None
        return (
            sum(isinstance(part, dict) and part.get("type") == "image" for part in content or [])
            if isinstance(content, list)
            else 0
        )

    images = sum(images_in(block) for _, block in found)
    max_side = MANY_IMAGES_MAX_SIDE if images > MANY_IMAGES else MAX_IMAGE_SIDE
    too_large: list[tuple[str, str]] = []  # (block path, data path)

    def check_image(path: str, block: dict) -> None:
        where, over = _check_image(path, block, urls, max_side)
        if over:
            too_large.append((path, where))

    pages = 0
    for path, block in found:
        if block["type"] == "image":
            check_image(path, block)
            continue
        where, n = _check_document(path, block, urls, check_image)
        pages += n
        if pages > max_pdf_pages:
            raise ApiError(400, f"{where}: A maximum of {max_pdf_pages} PDF pages may be provided.")
    if too_large:
        which = "" if max_side == MAX_IMAGE_SIDE else " for many-image requests"
        raise ApiError(
            400,
            f"{too_large[0][1]}: At least one of the image dimensions exceed max allowed size"
            f"{which}: {max_side} pixels",
            details={
                "error_code": "image_dimensions_too_large",
                "max_side_length_pixels": max_side,
                "paths": [path for path, _ in too_large],
            },
        )


def _web_search_tool(body: dict) -> dict | None:
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") in WEB_SEARCH_TOOL_TYPES:
            return tool
    return None


def _validate_tools(body: dict) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise ApiError(400, "tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ApiError(400, f"tools.{i}: Input should be a valid dictionary or object to extract fields from")
        kind = tool.get("type")
        if kind is None or kind == "custom":
            _check_string(tool.get("name"), f"tools.{i}.custom.name")
            if not isinstance(tool.get("input_schema"), dict):
                raise ApiError(400, f"tools.{i}.custom.input_schema: Field required")
        elif kind in WEB_SEARCH_TOOL_TYPES:
            if tool.get("name") != "web_search":
                raise ApiError(400, f"tools.{i}.{kind}.name: Input should be 'web_search'")
            max_uses = tool.get("max_uses")
            if max_uses is not None and (not isinstance(max_uses, int) or isinstance(max_uses, bool)):
                raise ApiError(400, f"tools.{i}.{kind}.max_uses: Input should be a valid integer")
            if max_uses is not None and max_uses < 1:
                raise ApiError(400, f"tools.{i}.{kind}.max_uses: Input should be greater than 0")
            for name in ("allowed_domains", "blocked_domains"):
                value = tool.get(name)
                if value is not None and (not isinstance(value, list) or not all(isinstance(d, str) for d in value)):
                    raise ApiError(400, f"tools.{i}.{kind}.{name}: Input should be a valid list of strings")
            if tool.get("allowed_domains") and tool.get("blocked_domains"):
                raise ApiError(400, f"tools.{i}.{kind}: Cannot specify both allowed_domains and blocked_domains")
            location = tool.get("user_location")
            if location is not None and (not isinstance(location, dict) or location.get("type") != "approximate"):
                raise ApiError(400, f"tools.{i}.{kind}.user_location.type: Input should be 'approximate'")
        elif kind not in KNOWN_TOOL_TYPES:
            expected = ", ".join(f"'{t}'" for t in KNOWN_TOOL_TYPES)
            raise ApiError(
                400,
                f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}",
            )


def _validate(
    body: Any, *, counting: bool, urls: Mapping[str, bytes] | None = None, max_pdf_pages: int = MAX_PDF_PAGES
) -> None:
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    for name in ("model", "messages") if counting else ("model", "max_tokens", "messages"):
        if name not in body:
            raise ApiError(400, f"{name}: Field required")
    if not counting and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
        raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: at least one message is required")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise ApiError(400, f"messages.{i}.content: Field required")
        final_assistant = i == len(messages) - 1 and role == "assistant"
        if message["content"] in ("", []) and not final_assistant:
            raise ApiError(
                400,
                f"messages.{i}: all messages must have non-empty content except for the "
                f"optional final assistant message",
            )
    _validate_tools(body)
    _validate_media(body, urls, max_pdf_pages)
    marked = [cc for _, _, cc in _blocks(body, urls) if cc]
    if len(marked) > MAX_CACHE_BREAKPOINTS:
        raise ApiError(
            400, f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marked)}."
        )
    for cc in marked:
        if cc.get("type") != "ephemeral" or cc.get("ttl", "5m") not in CACHE_TTLS:
            raise ApiError(400, "cache_control: Input should be {'type': 'ephemeral', 'ttl': '5m' | '1h'}")


# --- the answer ---


@dataclass
class _Out:
    """One content block of the answer."""

    block: dict  # as a non-streaming response carries it
    start: dict  # as its content_block_start carries it
    deltas: list[str] = field(default_factory=list)  # text_delta texts or input_json_delta partial JSON
    read_tokens: int = 0  # a search result's input tokens: the model reads what it found
    searched: bool = False  # a search that ran (and is billed)

    @property
    def kind(self) -> str:
        return self.block["type"]


@dataclass
class _Plan:
    blocks: list[_Out]
    stop_reason: str
    usage: dict  # final, as in message_delta
    start_usage: dict  # input fields as in message_start: before any search result was read


def _text_out(text: str, citations: list[dict] | None) -> _Out:
    if citations:
        return _Out(
            {"type": "text", "text": text, "citations": citations}, {"citations": [], "type": "text", "text": ""}
        )
    return _Out({"type": "text", "text": text}, {"type": "text", "text": ""})


def _citation(citation: dict, text: str, titles: dict[str, str]) -> dict:
    if citation.get("type", "web_search_result_location") != "web_search_result_location":
        return citation
    cited = citation.get("cited_text", text[:150])
    return {
        "type": "web_search_result_location",
        "cited_text": cited,
        "url": citation["url"],
        "title": citation.get("title", titles.get(citation["url"])),
        "encrypted_index": citation.get("encrypted_index") or _opaque(f"index:{citation['url']}:{cited}"),
    }


def _search_outs(script: Script, tool: dict) -> list[_Out]:
    outs: list[_Out] = []
    max_uses = tool.get("max_uses")
    for n, search in enumerate(script.searches, 1):
        if search.get("preamble"):
            outs.append(_text_out(search["preamble"], None))
        tool_id = _random_id("srvtoolu_01", 22)
        query = {"query": search["query"]}
        partial = json.dumps(query)
        size = max(1, script.delta_chars)
        outs.append(
            _Out(
                {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": query},
                {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {}},
                ["", *(partial[i : i + size] for i in range(0, len(partial), size))],
            )
        )
        error_code = "max_uses_exceeded" if max_uses is not None and n > max_uses else search.get("error_code")
        if error_code:
            content: Any = {"type": "web_search_tool_result_error", "error_code": error_code}
        else:
            content = [
                {
                    "type": "web_search_result",
                    "title": r["title"],
                    "url": r["url"],
                    "encrypted_content": r.get("encrypted_content") or _opaque(f"{r['url']}\n{r['title']}"),
                    "page_age": r.get("page_age"),
                }
                for r in search.get("results") or []
            ]
        block = {
            "type": "web_search_tool_result",
            "tool_use_id": tool_id,
            "content": content,
            "caller": {"type": "direct"},
        }
        read = 0 if error_code else sum(_tokens(len(json.dumps(r, sort_keys=True))) for r in content)
        outs.append(_Out(block, block, [], read, searched=not error_code))
    return outs


class FakeAnthropic:
    def __init__(
        self,
        *,
        min_cache_tokens: int = 1024,
        api_key: str | None = None,
        models: set[str] | None = None,
        max_pdf_pages: int = MAX_PDF_PAGES,
    ):
        self.min_cache_tokens = min_cache_tokens
        self.api_key = api_key  # None: any non-empty key is accepted
        # The models the API serves; None: any. Another model is a 404 not_found_error naming it, as the API answers.
        self.models = models
        self.max_pdf_pages = max_pdf_pages  # per request; 600 on 1M-context models
        self.max_request_bytes = MAX_REQUEST_BYTES
        # What URL sources (images, PDFs) download as; a URL not here is a 400, like an unreachable one.
        self.urls: dict[str, bytes] = {}
        self.default = Script()
        self.requests: list[Received] = []
        self.count_requests: list[Received] = []
        self.open_streams = 0
        self.clock: Callable[[], float] = time.monotonic  # cache expiry; replace to simulate time passing
        self._queue: deque[Script] = deque()
        self._cache: dict[str, tuple[int, float]] = {}  # prefix hash -> (tokens up to it, expires at)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up mid-stream cancels the handler at once, as the API
        # stops generating; a short shutdown_timeout keeps stop() from waiting on paced streams.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def enqueue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    def clear_cache(self) -> None:
        self._cache.clear()

    def count_input_tokens(self, body: dict) -> int:
        """`count_input_tokens` with this fake's URL contents."""
        return count_input_tokens(body, self.urls)

    async def wait_for_requests(self, n: int, timeout: float = 5) -> list[Received]:
        await self._wait(lambda: len(self.requests) >= n, timeout, f"{n} requests (got {len(self.requests)})")
        return self.requests

    async def wait_for_idle(self, timeout: float = 5) -> None:
        """Until no stream is being written: the server notices a hang-up a moment after the client."""
        await self._wait(lambda: self.open_streams == 0, timeout, "no open streams")

    async def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"FakeAnthropic: timed out waiting for {what}")
            await asyncio.sleep(0.005)

    # --- HTTP ---

    async def _read(self, request: web.Request) -> tuple[bytes, int]:
        """The body, unless it is over the limit (then b""), and its size; an oversized body is still drained,
        so the client gets the answer rather than a reset while it is sending."""
        parts, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size <= self.max_request_bytes:
                parts.append(chunk)
            elif parts:
                parts.clear()
        return (b"".join(parts) if size <= self.max_request_bytes else b""), size

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw, size = await self._read(request)
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        rec = Received(
            body=body if isinstance(body, dict) else {},
            headers=headers,
            at=time.monotonic(),
            request_id=_random_id("req_011C"),
            path=request.path,
            size=size,
        )
        counting = request.path == "/v1/messages/count_tokens"
        if request.path == "/v1/messages" or counting:
            (self.count_requests if counting else self.requests).append(rec)
        try:
            if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
                raise ApiError(404, f"Not found: {request.method} {request.path}")
            if size > self.max_request_bytes:
                raise ApiError(413, ERROR_MESSAGES[413])
            self._check_auth(headers)
            if body is None:
                raise ApiError(400, "There was an error parsing the body of your request: invalid JSON")
            _validate(body, counting=counting, urls=self.urls, max_pdf_pages=self.max_pdf_pages)
            if self.models is not None and body.get("model") not in self.models:
                raise ApiError(404, f"model: {body.get('model')}")
            if counting:
                return self._json(rec, {"input_tokens": count_input_tokens(body, self.urls)})
            script = self._queue.popleft() if self._queue else self.default
            rec.script = script
            if script.http_error is not None:
                extra = {"retry-after": str(script.retry_after)} if script.retry_after is not None else {}
                raise ApiError(script.http_error, ERROR_MESSAGES.get(script.http_error, "Error"), extra)
            if body.get("stream"):
                return await self._stream(request, rec, script)
            return await self._complete(request, rec, script)
        except ApiError as error:
            return self._error(rec, error)

    def _check_auth(self, headers: dict) -> None:
        # SDK 2.x sends the API key as `Authorization: Bearer`; older clients and curl use `x-api-key`.
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key and not bearer:
            raise ApiError(401, "x-api-key header is required")
        if self.api_key is not None and (key or bearer) != self.api_key:
            raise ApiError(401, "invalid x-api-key")
        if "anthropic-version" not in headers:
            raise ApiError(400, "anthropic-version: header is required")

    def _json(self, rec: Received, payload: dict, status: int = 200, headers: dict | None = None) -> web.Response:
        rec.status = status
        return web.json_response(payload, status=status, headers={"request-id": rec.request_id, **(headers or {})})

    def _error(self, rec: Received, error: ApiError) -> web.Response:
        detail = {"type": ERROR_TYPES.get(error.status, "api_error"), "message": error.message}
        if error.details is not None:
            detail["details"] = error.details
        if error.status == 413:  # answered before the API proper: the body has neither `type` nor `request_id`
            return self._json(rec, {"error": detail}, 413, error.headers)
        payload = {"type": "error", "error": detail, "request_id": rec.request_id}
        return self._json(rec, payload, error.status, error.headers)

    # --- generation ---

    def _plan(self, rec: Received, script: Script) -> _Plan:
        """The answer's blocks, stop reason and usage; records the cache writes the request makes."""
        body = rec.body
        tool = _web_search_tool(body)
        outs = _search_outs(script, tool) if tool is not None else []
        titles = {r["url"]: r["title"] for s in script.searches for r in s.get("results") or []}
        parts = default_text(body) if script.text is None else script.text
        for part in [parts] if isinstance(parts, str) else parts:
            text, citations = (part, None) if isinstance(part, str) else (part["text"], part.get("citations"))
            citations = [_citation(c, text, titles) for c in citations or []]
            if tool is None:  # no search happened, so nothing found can be cited
                citations = [c for c in citations if c["type"] != "web_search_result_location"]
            outs.append(_text_out(text, citations))
        if not any(out.kind == "text" for out in outs):
            outs.append(_text_out("", None))

        stop_reason = script.stop_reason
        generated = sum(len(out.block["text"]) if out.kind == "text" else len("".join(out.deltas)) for out in outs)
        if _tokens(generated) > body["max_tokens"] or stop_reason == "max_tokens":
            budget, kept = body["max_tokens"] * 4, []
            for out in outs:  # the model stops writing where the budget runs out
                if out.kind == "text":
                    text = out.block["text"][:budget]
                    budget -= len(text)
                    kept.append(_text_out(text, out.block.get("citations")))
                    if len(text) < len(out.block["text"]):
                        break
                elif out.kind == "server_tool_use":
                    budget -= len("".join(out.deltas))
                    if budget < 0:
                        break
                    kept.append(out)
                else:
                    kept.append(out)
            outs, stop_reason = kept, "max_tokens"
            if not any(out.kind == "text" for out in outs):
                outs.append(_text_out("", None))
        for out in outs:
            if out.kind == "text":
                out.deltas = split_deltas(out.block["text"], script.delta_chars)

        overrides = script.usage or {}
        usage = self._input_usage(body)
        start_usage = {**usage, **{k: v for k, v in overrides.items() if k not in ("output_tokens", "server_tool_use")}}
        usage["input_tokens"] += sum(out.read_tokens for out in outs)  # the model reads what it found
        usage["output_tokens"] = output_tokens("".join("".join(out.deltas) for out in outs))
        if tool is not None:
            usage["server_tool_use"] = {
                "web_search_requests": sum(out.searched for out in outs),
                "web_fetch_requests": 0,
            }
        usage.update(overrides)
        return _Plan(outs, stop_reason, usage, start_usage)

    def _input_usage(self, body: dict) -> dict:
        blocks = _blocks(body, self.urls)
        running = hashlib.sha256(json.dumps(body["model"]).encode())  # each model has its own cache
        digests, upto, total = [], [], REQUEST_OVERHEAD_TOKENS
        for part, tokens, _ in blocks:
            running.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
            digests.append(running.hexdigest())
            total += tokens
            upto.append(total)
        breakpoints = [i for i, (_, _, cc) in enumerate(blocks) if cc and upto[i] >= self.min_cache_tokens]
        now = self.clock()
        read, hit = 0, None
        for b in breakpoints:
            for p in range(b, max(b - CACHE_LOOKBACK_BLOCKS, -1), -1):
                entry = self._cache.get(digests[p])
                if entry and entry[1] > now:
                    if entry[0] > read:
                        read, hit = entry[0], p
                    break
        created = {"5m": 0, "1h": 0}
        previous = 0
        for b in breakpoints:
            ttl = blocks[b][2].get("ttl", "5m")
            created[ttl] += max(0, upto[b] - max(read, previous))
            previous = upto[b]
            self._cache[digests[b]] = (upto[b], now + CACHE_TTLS[ttl])
        if hit is not None and hit not in breakpoints:  # a read refreshes the entry's lifetime
            tokens, expires = self._cache[digests[hit]]
            self._cache[digests[hit]] = (tokens, max(expires, now + CACHE_TTLS["5m"]))
        creation = created["5m"] + created["1h"]
        return {
            "input_tokens": total - read - creation,
            "cache_creation_input_tokens": creation,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": created["5m"], "ephemeral_1h_input_tokens": created["1h"]},
        }

    def _message(self, rec: Received, content: list[dict], stop_reason: str | None, usage: dict) -> dict:
        return {
            "id": _random_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": rec.body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {**usage, "service_tier": "standard"},
        }

    async def _complete(self, request: web.Request, rec: Received, script: Script) -> web.StreamResponse:
        plan = self._plan(rec, script)
        n = sum(1 for out in plan.blocks for delta in out.deltas if delta)
        searches = sum(1 for out in plan.blocks if out.kind == "web_search_tool_result")
        first = script.delay if script.first_delay is None else script.first_delay
        try:  # the whole answer is generated first
            await asyncio.sleep(first + script.delay * max(0, n - 1) + script.search_delay * searches)
        except asyncio.CancelledError:
            rec.cancelled = True
            raise
        if script.drop_after_deltas is not None:
            request.transport.abort()
            return web.Response(status=200)  # never reaches the client
        if script.error_after_deltas is not None:
            return self._error(rec, ApiError(529, ERROR_MESSAGES[529]))
        rec.text = "".join(out.block["text"] for out in plan.blocks if out.kind == "text")
        rec.usage = plan.usage
        content = [out.block for out in plan.blocks if out.kind != "text" or out.block["text"]]
        return self._json(rec, self._message(rec, content, plan.stop_reason, plan.usage))

    async def _stream(self, request: web.Request, rec: Received, script: Script) -> web.StreamResponse:
        plan = self._plan(rec, script)
        blocks = plan.blocks
        text_deltas = sum(len(out.deltas) for out in blocks if out.kind == "text")
        last_text = max(i for i, out in enumerate(blocks) if out.kind == "text")
        faults = [
            (n, kind)
            for n, kind in (
                (script.error_after_deltas, "error"),
                (script.drop_after_deltas, "drop"),
                (script.end_without_stop_after_deltas, "end"),
            )
            if n is not None
        ]
        fault_at, fault = min(faults) if faults else (None, None)
        if fault_at is not None:
            fault_at = min(fault_at, text_deltas)
        first = script.delay if script.first_delay is None else script.first_delay

        resp = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": rec.request_id,
            }
        )

        async def send(event: str, data: dict) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        async def fail() -> web.StreamResponse:
            if fault == "error":
                await send(
                    "error", {"type": "error", "error": {"type": "overloaded_error", "message": ERROR_MESSAGES[529]}}
                )
            elif fault == "drop":
                # A reset, not a clean close: the client sees a truncated chunked body.
                request.transport.abort()
                return resp
            await resp.write_eof()
            return resp

        await resp.prepare(request)
        self.open_streams += 1
        rec.usage = {**plan.start_usage, "output_tokens": 0}
        if "server_tool_use" in plan.usage:
            rec.usage["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 0}
        message = self._message(rec, [], None, {**plan.start_usage, "output_tokens": 1})
        generated, paced = "", 0  # what output tokens are billed on; deltas sent, for pacing
        try:
            await send("message_start", {"type": "message_start", "message": message})
            for index, out in enumerate(blocks):
                if out.kind == "web_search_tool_result" and script.search_delay:
                    await asyncio.sleep(script.search_delay)
                await send(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": out.start}
                )
                if index == 0:
                    await send("ping", {"type": "ping"})
                for citation in (out.block.get("citations") or []) if out.kind == "text" else []:
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "citations_delta", "citation": citation},
                        },
                    )
                for delta in out.deltas:
                    if out.kind == "text" and fault is not None and rec.deltas_sent == fault_at:
                        return await fail()
                    if delta:
                        await asyncio.sleep(first if paced == 0 else script.delay)
                        paced += 1
                    if out.kind == "text":
                        await send(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": "text_delta", "text": delta},
                            },
                        )
                        rec.deltas_sent += 1
                        rec.text += delta
                    else:
                        await send(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": delta},
                            },
                        )
                    generated += delta
                    rec.usage["output_tokens"] = output_tokens(generated)  # billed for what was generated
                if index == last_text and fault is not None and rec.deltas_sent == fault_at:
                    return await fail()
                await send("content_block_stop", {"type": "content_block_stop", "index": index})
                if out.kind == "web_search_tool_result":  # the model has read what it found
                    rec.usage["input_tokens"] += out.read_tokens
                    rec.usage["server_tool_use"]["web_search_requests"] += out.searched
            rec.usage = plan.usage
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                    "usage": {k: v for k, v in plan.usage.items() if k != "cache_creation"},
                },
            )
            await send("message_stop", {"type": "message_stop"})
            await resp.write_eof()
            return resp
        except (asyncio.CancelledError, ConnectionError):
            rec.cancelled = True
            raise
        finally:
            self.open_streams -= 1
