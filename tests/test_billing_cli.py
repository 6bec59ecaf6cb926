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
            sys.executable,
            "-m",
            "billing",
            *args,
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
        await connection.execute(
            sa.text("UPDATE credit_accounts SET balance = 1000 WHERE team_id = :team"), {"team": TEAM}
        )
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


async def test_a_grant_with_a_key_is_applied_once_and_the_second_says_so(run_cli):
    first = await run_cli("grant", TEAM, "250", "--reason", "contract 42", "--key", "contract-42", "--json")
    again = await run_cli("grant", TEAM, "250", "--reason", "contract 42", "--key", "contract-42")
    assert first[0] == again[0] == 0, (first, again)
    assert json.loads(first[1]) == {
        "team_id": TEAM,
        "applied": True,
        "kind": "grant",
        "amount": 250,
        "key": "contract-42",
        "balance": 250,
        "reserved": 0,
        "available": 250,
    }
    assert "'contract-42' was granted before; nothing granted" in again[1] and "balance 250" in again[1]
    _code, out, _ = await run_cli("history", TEAM, "--json")
    assert [(entry["amount"], entry["external_id"]) for entry in json.loads(out)] == [(250, "contract-42")]


async def test_a_deduction_below_zero_needs_allow_negative(run_cli):
    assert (await run_cli("grant", TEAM, "100", "--reason", "start"))[0] == 0
    code, out, _ = await run_cli("grant", TEAM, "-150", "--reason", "too much", "--json")
    assert code == 1
    assert json.loads(out)["error"] == "negative_balance" and json.loads(out)["balance_after"] == -50
    assert json.loads((await run_cli("balance", TEAM, "--json"))[1])["balance"] == 100, (
        "a refused grant changes nothing"
    )

    code, out, _ = await run_cli("grant", TEAM, "-100", "--reason", "down to zero")
    assert code == 0 and "balance 0" in out, "reaching zero needs no flag"
    code, out, err = await run_cli("grant", TEAM, "-150", "--reason", "chargeback", "--allow-negative")
    assert code == 0, err
    assert "balance -150" in out
    code, out, _ = await run_cli("verify", "--json")
    assert (code, json.loads(out)) == (0, {"ok": True, "differences": []})


async def test_every_command_answers_json(run_cli):
    results = {
        "grant": await run_cli("grant", TEAM, "10", "--reason", "r", "--json"),
        "balance": await run_cli("balance", TEAM, "--json"),
        "history": await run_cli("history", TEAM, "--json"),
        "export": await run_cli("export", TEAM, "--since", "2020-01-01", "--json"),
        "verify": await run_cli("verify", "--json"),
        "sweep": await run_cli("sweep", "--json"),
    }
    parsed = {name: json.loads(out) for name, (code, out, _) in results.items() if code == 0}
    assert set(parsed) == set(results), results
    assert parsed["balance"]["available"] == 10 and parsed["history"][0]["amount"] == 10
    assert parsed["export"] == [] and parsed["sweep"] == {"released": 0} and parsed["verify"]["ok"] is True


@pytest.mark.parametrize(
    "command", [["balance", TEAM], ["history", TEAM], ["verify"], ["export", TEAM, "--since", "2026-01-01"]]
)
async def test_reading_a_database_that_does_not_exist_says_so_and_creates_nothing(
    run_cli, database_url, tmp_path, command
):
    if database_url.startswith("sqlite"):
        missing_path = tmp_path / "typo.db"
        url = f"sqlite+aiosqlite:///{missing_path}"
    else:
        url = database_url.rsplit("/", 1)[0] + "/no_such_database_for_cli"
    code, out, err = await run_cli(*command, env={"DATABASE_URL": url})
    assert code == 2 and out == ""
    assert err.startswith("no database:") and "does not exist" in err and len(err.strip().splitlines()) == 1, err
    if database_url.startswith("sqlite"):
        assert not missing_path.exists()
