"""Fresh databases for tests: a SQLite file, and a new PostgreSQL database when one is reachable.

PostgreSQL is optional on a developer's machine (the tests that need it skip, saying why) and
mandatory in CI, where `.ci/run` sets REQUIRE_POSTGRES=1 and a skip becomes a failure.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_REQUIRED = os.environ.get("REQUIRE_POSTGRES") == "1"


async def _admin_connection():
    try:
        return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__}: {exc})"
        if POSTGRES_REQUIRED:
            pytest.fail(message + " and REQUIRE_POSTGRES=1")
        pytest.skip(message + "; set TEST_POSTGRES_URL or start PostgreSQL to run these tests on it")


async def new_postgres_database() -> tuple[str, str]:
    """Create an empty database; return (SQLAlchemy URL, database name)."""
    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name, name


async def drop_postgres_database(name: str) -> None:
    admin = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
