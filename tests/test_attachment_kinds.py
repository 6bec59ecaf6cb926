"""What Claude can read of a file and what it may cost, decided from the file's own bytes."""

from __future__ import annotations

import struct
import zlib

import pytest

from bot.attachments import kinds


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0\0\0;"


def webp_vp8x(width: int, height: int) -> bytes:
    body = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\0\0\0\0"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize(
    "make, media_type", [(png, "image/png"), (jpeg, "image/jpeg"), (gif, "image/gif"), (webp_vp8x, "image/webp")]
)
def test_an_images_type_and_size_come_from_its_header(make, media_type):
    data = make(1234, 567)
    assert kinds.image_type(data) == media_type
    assert kinds.image_size(data) == (1234, 567)


def test_not_an_image_has_no_type_or_size():
    assert kinds.image_type(b"%PDF-1.7") is None and kinds.image_size(b"hello") is None
    assert kinds.image_size(b"\x89PNG\r\n\x1a\n") is None  # cut short


def test_image_tokens_follow_anthropics_estimate():
    assert kinds.image_tokens(1000, 1000) == 1334
    assert kinds.image_tokens(200, 200) == 54
    assert kinds.image_tokens(4000, 3000) <= kinds.IMAGE_MAX_TOKENS  # scaled down by the API first
    assert kinds.image_tokens(3000, 100) == kinds.image_tokens(1568, 52)


def test_pdf_pages_count_page_objects_not_the_page_tree():
    pdf = (
        b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>\n"
        b"2 0 obj << /Type /Page >>\n3 0 obj <</Type/Page>>"
    )
    assert kinds.pdf_pages(pdf) == 2
    assert kinds.pdf_tokens(2) == 2 * kinds.PDF_TOKENS_PER_PAGE
    assert kinds.pdf_pages(b"%PDF-1.5 compressed" + b"\0" * 65_000) == 3  # no visible page objects: by size


@pytest.mark.parametrize(
    "mimetype, filetype, kind",
    [
        ("image/png", "png", "image"),
        ("image/heic", "heic", None),
        ("application/pdf", "pdf", "pdf"),
        ("text/csv", "csv", "text"),
        ("application/json", "json", "text"),
        ("application/octet-stream", "python", "text"),
        ("application/zip", "zip", None),
        ("video/mp4", "mp4", None),
    ],
)
def test_kinds_by_what_slack_says(mimetype, filetype, kind):
    assert kinds.kind_of(mimetype, filetype) == kind


def test_a_turn_whose_files_no_longer_fit_keeps_its_text():
    from bot.history import Turn, trim_to_budget

    turns = [
        Turn("user", "summarise this", ({"id": "F1", "name": "r.pdf", "tokens": 30_000},)),
        Turn("assistant", "It is about pricing."),
        Turn("user", "and section 3?"),
    ]
    kept = trim_to_budget(turns, 1_000)
    assert [turn.role for turn in kept] == ["user", "assistant", "user"]
    assert kept[0].files == () and "r.pdf" in kept[0].content
