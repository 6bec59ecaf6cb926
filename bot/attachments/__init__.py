"""Files shared with a question (images, PDFs, text), read for Claude within the API's limits."""

from bot.attachments.conversation import ConversationFiles, read_conversation_files
from bot.attachments.reading import Attachment, ReadFiles, SharedFile, Unreadable, read_file, read_files, shared_files

__all__ = ["ConversationFiles", "read_conversation_files", "Attachment", "ReadFiles", "SharedFile", "Unreadable", "read_file", "read_files", "shared_files"]
