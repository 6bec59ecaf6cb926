"""`python -m billing` run as the operator runs it: a subprocess configured by its environment."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.billing

TEAM = "T0CLI"


@pytest.fixture
def run_cli(database_url, tmp_path):
    """Run the CLI against the test database. A bare environment and an empty working directory, so
    a developer's exported settings or .env cannot change what the CLI sees."""

    async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "billing", *args,
            cwd=tmp_path,
            env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode, stdout.decode(), stderr.decode()

    return run


async def test_grant_balance_history_and_verify(run_cli):
    code, out, err = await run_cli("grant", TEAM, "500", "--reason", "welcome pack")
    assert code == 0, err
    assert "balance 500" in out

    code, out, err = await run_cli("grant", TEAM, "-120", "--reason", "goodwill credit taken back")
    assert code == 0, err
    assert "balance 380" in out

    code, out, err = await run_cli("balance", TEAM, "--json")
    assert code == 0, err
    assert json.loads(out) == {"team_id": TEAM, "balance": 380, "reserved": 0, "available": 380}

    code, out, err = await run_cli("history", TEAM, "--limit", "10")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "when", "(UTC)"]
    assert "adjustment" in lines[2] and "-120" in lines[2] and "goodwill credit taken back" in lines[2]
    assert "grant" in lines[3] and "+500" in lines[3] and "welcome pack" in lines[3] and "cli" in lines[3]

    code, out, err = await run_cli("verify")
    assert (code, out.strip()) == (0, "OK"), err

    code, out, err = await run_cli("sweep")
    assert code == 0, err
    assert "released 0" in out


async def test_verify_fails_with_the_team_when_a_balance_is_tampered_with(run_cli, engine):
    assert (await run_cli("grant", TEAM, "100", "--reason", "test"))[0] == 0
    async with engine.begin() as connection:
        await connection.execute(sa.text("UPDATE credit_accounts SET balance = 1000 WHERE team_id = :team"), {"team": TEAM})
    code, out, _ = await run_cli("verify")
    assert code == 1
    assert f"{TEAM}: balance is 1000 but its ledger entries add up to 100" in out


async def test_balance_of_an_unknown_team_is_zero(run_cli):
    code, out, err = await run_cli("balance", "TNOBODY", "--json")
    assert code == 0, err
    assert json.loads(out) == {"team_id": "TNOBODY", "balance": 0, "reserved": 0, "available": 0}


async def test_a_config_error_is_one_line_on_stderr_and_exit_2(run_cli):
    code, out, err = await run_cli("verify", env={"DATABASE_URL": "mysql://nope/db"})
    assert code == 2
    assert err.strip() == "DATABASE_URL is invalid: must be a sqlite:/// or postgresql:// URL"
    assert out == ""


async def test_a_zero_grant_is_refused(run_cli):
    code, _, err = await run_cli("grant", TEAM, "0", "--reason", "nothing")
    assert code == 2
    assert "AMOUNT must not be zero" in err
