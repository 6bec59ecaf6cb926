"""Starting the bot: settings read once with one clear line per mistake, and the schema migrated."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from config import ConfigError, Settings, load_settings
from storage import create_engine, migrate
from tests.databases import drop_postgres_database, new_postgres_database

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ANTHROPIC_API_KEY": "k"}


def run_bot(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "ANTHROPIC_", "CLAUDE_", "DATABASE_", "STRIPE_"))
    }
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_a_missing_required_setting_stops_the_bot_with_one_line_naming_it(tmp_path, missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    result = run_bot(tmp_path, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0], result.stderr


def test_a_malformed_setting_is_named(tmp_path):
    result = run_bot(tmp_path, {**REQUIRED, "CLAUDE_MAX_TOKENS": "lots"})
    assert result.returncode == 2
    assert "CLAUDE_MAX_TOKENS" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_model_is_refused_at_start_not_charged_at_zero(tmp_path):
    env = {
        **REQUIRED,
        "CLAUDE_MODEL": "claude-imaginary-9",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "PORT": "0",
    }
    result = run_bot(tmp_path, env)
    assert result.returncode == 2
    assert "claude-imaginary-9" in result.stderr
    assert "Traceback" not in result.stderr


def test_settings_come_from_a_dotenv_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "SLACK_BOT_TOKEN=xoxb-env\nSLACK_SIGNING_SECRET=s\nANTHROPIC_API_KEY=k\nCLAUDE_MAX_TOKENS=77\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "CLAUDE_MAX_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.slack_bot_token == "xoxb-env" and settings.claude_max_tokens == 77


def test_platform_database_urls_get_the_async_driver():
    base = dict(_env_file=None, slack_bot_token="x", slack_signing_secret="s", anthropic_api_key="k")
    assert (
        load_settings(**base, database_url="postgres://u:p@h:5432/d").database_url
        == "postgresql+asyncpg://u:p@h:5432/d"
    )
    assert load_settings(**base, database_url="sqlite:///bot.db").database_url == "sqlite+aiosqlite:///bot.db"
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(**base, database_url="mysql://h/d")
    # The libpq form most hosts hand out; asyncpg calls it `ssl` and would refuse `sslmode` at the first connect.
    assert (
        load_settings(**base, database_url="postgres://u:p@h/d?sslmode=require").database_url
        == "postgresql+asyncpg://u:p@h/d?ssl=require"
    )
    assert (
        load_settings(**base, database_url="postgresql://u@h/d?ssl=require").database_url
        == "postgresql+asyncpg://u@h/d?ssl=require"
    )
    with pytest.raises(ConfigError, match=r"DATABASE_URL.*sslmode"):
        load_settings(**base, database_url="postgresql://u@h/d?sslmode=sometimes")


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_a_postgres_url_with_sslmode_connects(mode):
    url, name = await new_postgres_database()
    try:
        settings = load_settings(
            _env_file=None,
            slack_bot_token="x",
            slack_signing_secret="s",
            anthropic_api_key="k",
            database_url=url.replace("postgresql+asyncpg://", "postgresql://") + f"?sslmode={mode}",
        )
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            async with engine.connect() as connection:
                assert (await connection.execute(sa.text("SELECT 1"))).scalar_one() == 1
        finally:
            await engine.dispose()
    finally:
        await drop_postgres_database(name)


def test_a_public_url_that_is_not_a_url_is_named_at_start(tmp_path):
    result = run_bot(tmp_path, {**REQUIRED, "PUBLIC_URL": "notaurl"})
    assert result.returncode == 2
    assert "PUBLIC_URL" in result.stderr and "absolute URL" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_log_level_is_named_at_start(tmp_path):
    result = run_bot(tmp_path, {**REQUIRED, "LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert "LOG_LEVEL" in result.stderr and "Traceback" not in result.stderr


def test_defaults_match_the_documented_contract():
    settings = Settings(_env_file=None, slack_bot_token="x", slack_signing_secret="s", anthropic_api_key="k")
    assert settings.claude_model == "claude-sonnet-4-6"
    assert settings.claude_max_tokens == 1024
    assert settings.port == 3000
    assert settings.slack_update_interval == 1.0
    assert settings.slack_edits_per_minute == 50
    assert settings.slack_api_url == "https://slack.com/api/"


def test_migrate_command_creates_the_schema(tmp_path):
    database = tmp_path / "bot.db"
    result = run_bot(tmp_path, {"DATABASE_URL": f"sqlite:///{database}"}, "migrate")
    assert result.returncode == 0, result.stderr
    tables = {row[0] for row in sqlite3.connect(database).execute("select name from sqlite_master where type='table'")}
    assert {"slack_events", "conversation_turns", "credit_accounts", "credit_ledger", "credit_reservations"} <= tables
