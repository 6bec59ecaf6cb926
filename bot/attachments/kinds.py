"""What Claude can read of a file, and what reading it costs at most: images, PDFs and text, with the API's
limits (an image 5 MB and 8000 px a side, a PDF 32 MB and 100 pages, a request 32 MB)."""

from __future__ import annotations

import math
import re
import struct

# The API takes an image of 5 MB *as base64*: a file of at most 3.75 MB.
IMAGE_MAX_BYTES = 5 * 1024 * 1024 * 3 // 4
IMAGE_MAX_LONG_EDGE = 1568  # larger images are scaled down by the API first (aspect kept) ...
IMAGE_MAX_TOKENS = 1600  # ... as are those that would cost more than about this
IMAGE_MAX_SIDE = 8000
PDF_MAX_BYTES = 32 * 1024 * 1024
PDF_MAX_PAGES = 100
TEXT_MAX_BYTES = 256 * 1024  # about 64,000 tokens: a long file, but not a whole export
REQUEST_MAX_BYTES = 30 * 1024 * 1024  # the API takes 32 MB a request; base64 and the rest need room
PDF_TOKENS_PER_PAGE = 3000  # the top of Anthropic's 1,500-3,000 a page (text plus the page's image)
TEXT_CHARS_PER_TOKEN = 3  # reserve as for questions: code and many languages pack tighter than 4

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
TEXT_MIMETYPES = {
    "application/json",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/javascript",
    "application/x-sh",
    "application/sql",
    "application/toml",
    "application/x-python",
}
TEXT_FILETYPES = {
    "text",
    "markdown",
    "csv",
    "tsv",
    "json",
    "yaml",
    "xml",
    "html",
    "css",
    "javascript",
    "typescript",
    "python",
    "ruby",
    "go",
    "rust",
    "java",
    "kotlin",
    "swift",
    "c",
    "cpp",
    "csharp",
    "php",
    "shell",
    "sql",
    "diff",
    "post",
    "log",
    "toml",
    "ini",
    "dockerfile",
    "makefile",
    "perl",
    "r",
    "scala",
    "lua",
    "haskell",
}


def kind_of(mimetype: str, filetype: str) -> str | None:
    """ "image", "pdf" or "text" by what Slack says the file is; None for what Claude cannot read."""
    mimetype = (mimetype or "").split(";")[0].strip().lower()
    if mimetype in IMAGE_TYPES:
        return "image"
    if mimetype == "application/pdf" or filetype == "pdf":
        return "pdf"
    if mimetype.startswith("text/") or mimetype in TEXT_MIMETYPES or filetype in TEXT_FILETYPES:
        return "text"
    return None


def byte_limit(kind: str) -> int:
    return {"image": IMAGE_MAX_BYTES, "pdf": PDF_MAX_BYTES, "text": TEXT_MAX_BYTES}[kind]


def image_type(data: bytes) -> str | None:
    """The image's real type by its first bytes (Slack's mimetype can be wrong, and the API checks)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header; None when the header cannot be read."""
    size = _header_size(data)
    return size if size is not None and min(size) > 0 else None


def _header_size(data: bytes) -> tuple[int, int] | None:
    try:
        kind = image_type(data)
        if kind == "image/png":
            return struct.unpack(">II", data[16:24])
        if kind == "image/gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "image/webp":
            return _webp_size(data)
        if kind == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 < len(data):
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            position += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker in _JPEG_FRAME_MARKERS:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def image_tokens(width: int, height: int) -> int:
    """Anthropic's documented estimate, width × height / 750, after the API's scaling down of large images."""
    scale = min(1.0, IMAGE_MAX_LONG_EDGE / max(width, height), math.sqrt(IMAGE_MAX_TOKENS * 750 / (width * height)))
    if scale < 1:
        width, height = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    return math.ceil(width * height / 750)


_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def pdf_pages(data: bytes) -> int:
    """Pages of a PDF, counted by its page objects; from its size when they are compressed out of sight."""
    counted = len(_PAGE.findall(data))
    return counted or max(1, math.ceil(len(data) / 30_000))


def pdf_tokens(pages: int) -> int:
    return pages * PDF_TOKENS_PER_PAGE


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / TEXT_CHARS_PER_TOKEN) + 8  # the file's name and fences


def estimate_tokens(mimetype: str, filetype: str, size: int) -> int:
    """What a file may cost, from what Slack says of it before it is read (to trim a thread the bot joins)."""
    kind = kind_of(mimetype, filetype)
    if kind == "image":
        return IMAGE_MAX_TOKENS
    if kind == "pdf":
        return pdf_tokens(min(PDF_MAX_PAGES, max(1, math.ceil(size / 30_000))))
    if kind == "text":
        return math.ceil(min(size, TEXT_MAX_BYTES) / TEXT_CHARS_PER_TOKEN)
    return 0


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
