"""A fresh database for each run of the bot: a SQLite file (the world's temporary folder), or a new database
on the PostgreSQL server that `--database-url` names, dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from config import StorageSettings


@contextlib.asynccontextmanager
async def fresh_database(server_url: str | None) -> AsyncIterator[str | None]:
    """None (the bot's SQLite file) without a server; else the URL of a new, empty PostgreSQL database."""
    if not server_url:
        yield None
        return
    async_url = StorageSettings(_env_file=None, database_url=server_url).database_url
    if not async_url.startswith("postgresql"):
        raise SystemExit("--database-url must be a postgresql:// URL (SQLite is the default)")
    plain = async_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(plain)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield async_url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(plain)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
