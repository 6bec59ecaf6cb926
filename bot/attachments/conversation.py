"""The files of a whole request: the question's, and those of earlier turns (fetched again, so that Claude sees
them where they were shared, and a follow-up reads them from Anthropic's cache)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.attachments import kinds
from bot.attachments.reading import Attachment, ReadFiles, SharedFile, Unreadable, read_file, read_files


@dataclass
class ConversationFiles:
    question: ReadFiles = field(default_factory=ReadFiles)
    earlier: dict[str, Attachment] = field(default_factory=dict)  # by file id
    earlier_unreadable: list[Unreadable] = field(default_factory=list)
    unpriced_tokens: int = 0  # earlier files not yet counted in the history's budget (a thread just joined)

    @property
    def extra_tokens(self) -> int:
        """Input tokens the claim's hold did not cover: the question's files and those newly found earlier."""
        return self.question.tokens + self.unpriced_tokens

    @property
    def unreadable(self) -> list[Unreadable]:
        return self.question.unreadable + self.earlier_unreadable

    def records(self) -> tuple[dict, ...]:
        """The question's readable files as the history keeps them."""
        return tuple(
            {**attachment.file.as_record(), "tokens": attachment.tokens} for attachment in self.question.readable
        )


async def read_conversation_files(
    question_files: tuple[SharedFile, ...], earlier: list[dict], client: AsyncWebClient, http: aiohttp.ClientSession
) -> ConversationFiles:
    """`earlier`: the file records of the turns before the question (bot.history.Turn.files)."""
    unique = list({record["id"]: record for record in earlier if record.get("id")}.values())
    question, results = await asyncio.gather(
        read_files(list(question_files), client, http),
        asyncio.gather(*(read_file(SharedFile.from_record(record), client, http) for record in unique)),
    )
    files = ConversationFiles(question=question)
    total = sum(attachment.encoded_bytes for attachment in question.readable)
    # Newest first: when everything together is more than one request takes, the oldest files are left out.
    for record, result in reversed(list(zip(unique, results, strict=True))):
        if isinstance(result, Attachment) and total + result.encoded_bytes > kinds.REQUEST_MAX_BYTES:
            result = Unreadable(result.file, "together with the newer files it is more than Claude takes at once")
        if isinstance(result, Unreadable):
            files.earlier_unreadable.append(result)
            continue
        total += result.encoded_bytes
        files.earlier[record["id"]] = result
        if not record.get("tokens"):
            files.unpriced_tokens += result.tokens
    return files
