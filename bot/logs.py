"""Log lines for operators: text (the default) or one JSON object per line (LOG_FORMAT=json).

Each line carries the context of the work it is about: the Slack event id and team, the Claude request id,
the credit reservation. A unit of work (an event, a webhook) opens its context with `log_context`; what is
learned later (the request id Claude answers with) is added with `annotate`, and every task of that unit of
work sees it, including the ones started before.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

_context: ContextVar[dict[str, object] | None] = ContextVar("log_context", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_context(**values: object) -> None:
    """Start the context of a unit of work in the running task (which its later tasks inherit)."""
    _context.set({**(_context.get() or {}), **_present(values)})


def annotate(**values: object) -> None:
    """Add to the current unit of work's context, visible to all its tasks."""
    current = _context.get()
    if current is None:
        _context.set(_present(values))
    else:
        current.update(_present(values))


def current_context() -> dict[str, object]:
    return dict(_context.get() or {})


def _present(values: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in values.items() if value is not None}


class TextFormatter(logging.Formatter):
    """The usual line, then the context as key=value pairs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = current_context()
        if not context:
            return line
        pairs = " ".join(f"{name}={value}" for name, value in context.items())
        head, newline, rest = line.partition("\n")  # after the message, before any traceback
        return f"{head} [{pairs}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **current_context(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
