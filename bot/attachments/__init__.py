"""Files shared with a question (images, PDFs, text), read for Claude within the API's limits."""

from bot.attachments.conversation import ConversationFiles, read_conversation_files
from bot.attachments.reading import Attachment, ReadFiles, SharedFile, Unreadable, read_file, read_files, shared_files

__all__ = [
    "Attachment",
    "ConversationFiles",
    "ReadFiles",
    "SharedFile",
    "Unreadable",
    "read_conversation_files",
    "read_file",
    "read_files",
    "shared_files",
]
