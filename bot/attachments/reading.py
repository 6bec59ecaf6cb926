"""Reading the files of a question for Claude: fetched from Slack with the workspace's bot token, streamed
into memory under each kind's size limit (never to disk), and turned into content blocks; a file that cannot
be read is named with the reason, and the rest are read. File contents are never logged (only file ids)."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from urllib.parse import urlparse

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.attachments import kinds

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_read=20)
CHUNK = 64 * 1024
MAX_FILES = 10  # Slack attaches at most 10 files to a message


@dataclass(frozen=True)
class SharedFile:
    """A file as a message event (or the bot's history) names it."""

    id: str
    name: str
    mimetype: str = ""
    filetype: str = ""
    size: int = 0
    url: str = ""  # url_private_download (or url_private)
    needs_info: bool = False  # Slack Connect: `file_access: "check_file_info"`, the rest comes from files.info
    external: bool = False  # a link to a file kept elsewhere (Google Drive, another app's remote file)

    @classmethod
    def from_slack(cls, file: dict) -> SharedFile | None:
        file_id = file.get("id")
        if not isinstance(file_id, str) or not file_id:
            return None
        size = file.get("size")
        return cls(
            id=file_id,
            name=str(file.get("name") or file.get("title") or file_id),
            mimetype=str(file.get("mimetype") or ""),
            filetype=str(file.get("filetype") or ""),
            size=size if isinstance(size, int) else 0,
            url=str(file.get("url_private_download") or file.get("url_private") or ""),
            needs_info=file.get("file_access") == "check_file_info",
            external=bool(file.get("is_external")) or file.get("mode") == "external",
        )

    def as_record(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "mimetype": self.mimetype,
            "filetype": self.filetype,
            "size": self.size,
            "url": self.url,
        }

    @classmethod
    def from_record(cls, record: dict) -> SharedFile:
        return cls(
            **{key: record[key] for key in ("id", "name", "mimetype", "filetype", "size", "url") if key in record}
        )


def shared_files(message: dict) -> tuple[SharedFile, ...]:
    """The files a message (an event, or one read from a thread) shares."""
    files = message.get("files")
    if not isinstance(files, list):
        return ()
    return tuple(shared for shared in (SharedFile.from_slack(f) for f in files if isinstance(f, dict)) if shared)


SLACK_FILE_HOSTS = {"files.slack.com", "files.slack-gov.com"}


def on_slack(url: str, api_url: str) -> bool:
    """Whether `url` is Slack's (its file hosts, or the host SLACK_API_URL names): the only place the token goes."""
    parsed, api = urlparse(url), urlparse(api_url)
    if parsed.hostname in SLACK_FILE_HOSTS:
        return parsed.scheme == "https"
    return bool(parsed.hostname) and (parsed.scheme, parsed.hostname, parsed.port) == (
        api.scheme,
        api.hostname,
        api.port,
    )


@dataclass(frozen=True)
class Attachment:
    file: SharedFile
    kind: str  # image, pdf or text
    blocks: list[dict]  # what Claude is given: the file's name, then its content
    tokens: int  # the most input tokens it can cost
    encoded_bytes: int


@dataclass(frozen=True)
class Unreadable:
    file: SharedFile
    reason: str  # shown to the asker, after the file's name


@dataclass
class ReadFiles:
    readable: list[Attachment] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(attachment.tokens for attachment in self.readable)

    @property
    def blocks(self) -> list[dict]:
        return [block for attachment in self.readable for block in attachment.blocks]


class NotFetched(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


NO_ACCESS = "I could not open it: it was deleted, or I have no access to it"


async def read_files(files: list[SharedFile], client: AsyncWebClient, http: aiohttp.ClientSession) -> ReadFiles:
    """Every file read at once; the result keeps their order."""
    results = await asyncio.gather(*(read_file(file, client, http) for file in files[:MAX_FILES]))
    read = ReadFiles()
    total = 0
    for result in results:
        if isinstance(result, Unreadable):
            read.unreadable.append(result)
        elif total + result.encoded_bytes > kinds.REQUEST_MAX_BYTES:
            read.unreadable.append(
                Unreadable(
                    result.file,
                    f"together the files are over the {kinds.megabytes(kinds.REQUEST_MAX_BYTES)} Claude takes at once",
                )
            )
        else:
            total += result.encoded_bytes
            read.readable.append(result)
    return read


async def read_file(file: SharedFile, client: AsyncWebClient, http: aiohttp.ClientSession) -> Attachment | Unreadable:
    try:
        if file.needs_info or not file.url:
            file = await _complete(file, client)
        if file.external or not on_slack(file.url, client.base_url):
            # The bot token goes only to Slack: a remote file's URL is whatever the app that shared it chose.
            return Unreadable(file, "it is a link to a file kept outside Slack, which I don't open")
        kind = kinds.kind_of(file.mimetype, file.filetype)
        if kind is None:
            return Unreadable(
                file,
                f"I can read images (PNG, JPEG, GIF, WebP), PDFs and text files, not "
                f"{file.filetype or file.mimetype or 'this kind of file'}",
            )
        limit = kinds.byte_limit(kind)
        if file.size > limit:
            return Unreadable(file, _too_large(kind, file.size))
        data = await download(http, file, client.token or "", limit)
        if data is None:
            return Unreadable(file, _too_large(kind, file.size))
        return _as_attachment(file, kind, data)
    except NotFetched as problem:
        log.info("file %s not read: %s", file.id, problem.reason)
        return Unreadable(file, problem.reason)
    except Exception:  # a file nobody foresaw must not cost the answer: it is named, the rest answered
        log.exception("file %s could not be read", file.id)
        return Unreadable(file, "I could not read it")


def _too_large(kind: str, size: int) -> str:
    limit = kinds.megabytes(kinds.byte_limit(kind)) if kind != "text" else f"{kinds.TEXT_MAX_BYTES // 1024} KB"
    what = {"image": "images", "pdf": "PDFs", "text": "text files"}[kind]
    return f"{what} can be at most {limit}" + (f" (this one is {kinds.megabytes(size)})" if size else "")


async def _complete(file: SharedFile, client: AsyncWebClient) -> SharedFile:
    """A Slack Connect file arrives without its details: files.info has them (or says there is no access)."""
    try:
        response = await client.files_info(file=file.id)
    except SlackApiError:
        raise NotFetched(NO_ACCESS) from None
    except (aiohttp.ClientError, TimeoutError):
        raise NotFetched("I could not reach Slack to fetch it") from None
    completed = SharedFile.from_slack(response.get("file") or {})
    if completed is None or not completed.url:
        raise NotFetched(NO_ACCESS)
    return completed


async def download(http: aiohttp.ClientSession, file: SharedFile, token: str, limit: int) -> bytes | None:
    """The file's bytes, kept in memory; None when it is bigger than `limit` (stops reading at once)."""
    try:
        async with http.get(
            file.url, headers={"Authorization": f"Bearer {token}"}, timeout=DOWNLOAD_TIMEOUT
        ) as response:
            if response.status in (403, 404, 410):
                raise NotFetched(NO_ACCESS)
            if response.status != 200:
                raise NotFetched("Slack did not hand it over just now; try again in a minute")
            if response.content_type == "text/html" and file.mimetype != "text/html":
                # Slack answers a download it refuses (no files:read, a token of another workspace) with its login page.
                raise NotFetched(NO_ACCESS)
            data = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK):
                data += chunk
                if len(data) > limit:
                    return None
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError):
        raise NotFetched("I could not download it from Slack just now") from None


def _named(file: SharedFile, kind: str) -> dict:
    return {"type": "text", "text": f"[{kind} shared by the asker: {file.name}]"}


def _as_attachment(file: SharedFile, kind: str, data: bytes) -> Attachment | Unreadable:
    if kind == "image":
        media_type = kinds.image_type(data)
        size = kinds.image_size(data) if media_type else None
        if media_type is None or size is None:
            return Unreadable(file, "it is not a PNG, JPEG, GIF or WebP image I can read")
        width, height = size
        if max(width, height) > kinds.IMAGE_MAX_SIDE:
            return Unreadable(
                file, f"images can be at most {kinds.IMAGE_MAX_SIDE} pixels a side (this one is {width}×{height})"
            )
        encoded = base64.b64encode(data).decode()
        block = {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": encoded}}
        return Attachment(file, kind, [_named(file, "image"), block], kinds.image_tokens(width, height), len(encoded))
    if kind == "pdf":
        if not data.startswith(b"%PDF"):
            return Unreadable(file, "it is not a PDF I can read")
        pages = kinds.pdf_pages(data)
        if pages > kinds.PDF_MAX_PAGES:
            return Unreadable(file, f"PDFs can have at most {kinds.PDF_MAX_PAGES} pages (this one has {pages})")
        encoded = base64.b64encode(data).decode()
        block = {
            "type": "document",
            "title": file.name[:500],
            "source": {"type": "base64", "media_type": "application/pdf", "data": encoded},
        }
        return Attachment(file, kind, [block], kinds.pdf_tokens(pages), len(encoded))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Unreadable(file, "it is not UTF-8 text I can read")
    name = file.name.replace('"', "'")
    block = {"type": "text", "text": f'<file name="{name}">\n{text}\n</file>'}
    return Attachment(file, kind, [block], kinds.text_tokens(text) + kinds.text_tokens(file.name), len(text.encode()))
