"""Operating the bot: start-up checks in order with one line per problem, `python -m bot check`, GET /metrics,
LOG_FORMAT=json, and the bot's own long-lived state staying bounded. Start-ups run `python -m bot` as a
process of its own, against the fakes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.slack import FakeSlack
from tests.fakes.stripe import FakeStripe
from tests.harness import (
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    STRIPE_SECRET_KEY,
    STRIPE_WEBHOOK_SECRET,
    TEAM,
    BotHarness,
)
from tests.process import BotProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
CLEAN_EXIT_NOISE = ("Traceback", "Unclosed", "unclosed", "will be unused")


@pytest.fixture
async def fakes():
    slack, claude, stripe = FakeSlack(), FakeAnthropic(api_key="test-anthropic-key"), FakeStripe()
    for fake in (slack, claude, stripe):
        await fake.start()
    slack.add_workspace(TEAM, BOT_TOKEN, bot_user_id=BOT_USER, team_name="Acme")
    yield slack, claude, stripe
    for fake in (slack, claude, stripe):
        await fake.stop()


def environment(tmp_path: Path, slack: FakeSlack, claude: FakeAnthropic, **extra: str) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "ANTHROPIC_API_KEY": "test-anthropic-key",
        "ANTHROPIC_BASE_URL": claude.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "FREE_CREDITS": "100000",
        **extra,
    }


async def run_bot(
    tmp_path: Path, env: dict[str, str], *args: str, stop_when: str | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """`python -m bot ARGS` to its end (exit status, stdout, stderr); with `stop_when`, SIGTERM once stderr
    shows it. Asynchronous, so that the fakes in this loop keep answering."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stderr_lines: list[str] = []

    async def read_stderr() -> None:
        async for line in process.stderr:
            stderr_lines.append(line.decode())
            if stop_when and stop_when in stderr_lines[-1]:
                process.send_signal(signal.SIGTERM)

    try:
        async with asyncio.timeout(timeout):
            stdout, _ = await asyncio.gather(process.stdout.read(), read_stderr())
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the bot did not exit:\n" + "".join(stderr_lines)) from None
    return code, stdout.decode(), "".join(stderr_lines)


# --- start-up ---------------------------------------------------------------------------------------------


async def test_every_settings_problem_is_listed_at_once_one_line_each(tmp_path):
    code, _, stderr = await run_bot(
        tmp_path,
        {
            "SLACK_SIGNING_SECRET": "s",
            "LOG_LEVEL": "verbose",
            "CLAUDE_MODEL": "claude-imaginary-9",
            "CREDIT_PACKS": "lots",
            "PUBLIC_URL": "notaurl",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        },
    )
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    for name in ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "LOG_LEVEL", "CLAUDE_MODEL", "CREDIT_PACKS", "PUBLIC_URL"):
        assert sum(name in line.split(" is ")[0] for line in lines) == 1, (name, stderr)
    assert len(lines) == 6 and "Traceback" not in stderr
    assert not (tmp_path / "bot.db").exists()  # settings come first: nothing was touched


async def test_an_unreachable_database_is_one_line_naming_host_and_error(tmp_path, fakes):
    slack, claude, _ = fakes
    port = free_port()
    code, _, stderr = await run_bot(
        tmp_path,
        environment(tmp_path, slack, claude, DATABASE_URL=f"postgresql://postgres:secret@127.0.0.1:{port}/test"),
    )
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"database unreachable: postgresql 127.0.0.1:{port}/test: [Errno 111] Connect call failed ('127.0.0.1', {port})"
    ]
    assert "secret" not in stderr
    code, _, stderr = await run_bot(
        tmp_path, environment(tmp_path, slack, claude, DATABASE_URL="sqlite:////no/such/dir/bot.db")
    )
    assert (
        code == 2
        and stderr.strip()
        == "database unreachable: sqlite /no/such/dir/bot.db: unable to open database file (no folder /no/such/dir)"
    )
    assert not slack.calls  # the token is checked only once the database answers


async def test_a_port_in_use_is_one_line_before_the_database_is_touched(tmp_path, fakes):
    slack, claude, _ = fakes
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        code, _, stderr = await run_bot(tmp_path, environment(tmp_path, slack, claude, PORT=str(port)))
    assert code == 2
    assert stderr.strip() == f"port {port} is in use (PORT): another process listens there"
    assert not (tmp_path / "bot.db").exists()


async def test_a_token_slack_refuses_stops_the_start_with_one_line_and_nothing_left_open(tmp_path, fakes):
    slack, claude, _ = fakes
    code, _, stderr = await run_bot(
        tmp_path,
        environment(tmp_path, slack, claude, SLACK_BOT_TOKEN="xoxb-bogus", PORT=str(free_port()), LOG_LEVEL="WARNING"),
    )
    assert code == 2, stderr
    assert stderr.strip() == f"SLACK_BOT_TOKEN refused by Slack ({slack.api_url}auth.test): invalid_auth"
    assert [call.method for call in slack.calls] == ["auth.test"]


async def test_a_good_start_says_how_it_is_set_up_in_one_line_and_stops_cleanly(tmp_path, fakes):
    slack, claude, stripe = fakes
    env = environment(
        tmp_path,
        slack,
        claude,
        PORT=str(free_port()),
        STRIPE_SECRET_KEY=STRIPE_SECRET_KEY,
        STRIPE_API_BASE=stripe.api_base,
    )
    code, _, stderr = await run_bot(tmp_path, env, stop_when="bot ready")
    assert code == 0, stderr
    ready = [line for line in stderr.splitlines() if "bot ready" in line]
    assert len(ready) == 1, stderr
    for part in (
        f"port {env['PORT']}",
        f"single workspace {TEAM} (Acme) as {BOT_USER}",
        "database sqlite",
        "model claude-sonnet-4-6 (priced by usage at 100 credits/USD)",
        "streaming auto",
        "Stripe off (STRIPE_WEBHOOK_SECRET and PUBLIC_URL not set)",
        "Socket Mode off",
        "Redis off",
    ):
        assert part in ready[0], (part, ready[0])
    assert "top-ups are off: STRIPE_WEBHOOK_SECRET and PUBLIC_URL not set" in stderr
    for noise in CLEAN_EXIT_NOISE:
        assert noise not in stderr, stderr


# --- python -m bot check ------------------------------------------------------------------------------------


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    table = {}
    for line in stdout.strip().splitlines()[1:]:
        check, status, detail = line.split(maxsplit=2)
        table.setdefault(check, (status, detail))
    return table


async def test_check_reports_every_credential_ok_and_changes_nothing(tmp_path, fakes):
    slack, claude, stripe = fakes
    env = environment(
        tmp_path,
        slack,
        claude,
        STRIPE_SECRET_KEY=STRIPE_SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        PUBLIC_URL="https://bot.example.com",
        STRIPE_API_BASE=stripe.api_base,
    )
    code, stdout, stderr = await run_bot(tmp_path, env, "check")
    table = rows(stdout)
    assert code == 0, stdout + stderr
    assert {name: status for name, (status, _) in table.items()} == {
        "settings": "ok",
        "database": "ok",
        "slack": "ok",
        "anthropic": "ok",
        "stripe": "ok",
    }
    assert "does not exist yet" in table["database"][1] and not (tmp_path / "bot.db").exists()
    assert "every scope" in table["slack"][1] and TEAM in table["slack"][1]
    assert claude.count_requests and not claude.requests  # counting tokens is free; nothing was generated
    assert [request.path for request in stripe.requests] == ["/v1/balance"]


async def test_check_names_each_problem_and_exits_1(tmp_path, fakes):
    slack, claude, stripe = fakes
    slack.add_workspace("T0002", "xoxb-narrow", scopes="app_mentions:read,chat:write")
    claude.models = {"claude-sonnet-4-6"}
    env = environment(
        tmp_path,
        slack,
        claude,
        SLACK_BOT_TOKEN="xoxb-narrow",
        ANTHROPIC_API_KEY="wrong-key",
        STRIPE_SECRET_KEY="pk_live_not_a_secret",
        STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        PUBLIC_URL="https://bot.example.com",
        STRIPE_API_BASE=stripe.api_base,
    )
    code, stdout, _ = await run_bot(tmp_path, env, "check")
    table = rows(stdout)
    assert code == 1
    assert (
        table["slack"][0] == "problem"
        and "lacks assistant:write" in table["slack"][1]
        and "manifest.yml" in table["slack"][1]
    )
    assert (
        table["anthropic"][0] == "problem"
        and "ANTHROPIC_API_KEY refused (401 authentication_error" in table["anthropic"][1]
    )
    assert table["stripe"][0] == "problem" and "STRIPE_SECRET_KEY refused" in table["stripe"][1]
    assert "wrong-key" not in stdout and "pk_live_not_a_secret" not in stdout

    code, stdout, _ = await run_bot(
        tmp_path,
        environment(tmp_path, slack, claude, CLAUDE_MODEL="claude-haiku-4-5", STRIPE_SECRET_KEY=STRIPE_SECRET_KEY),
        "check",
    )
    table = rows(stdout)
    assert code == 1
    assert (
        table["anthropic"][0] == "problem"
        and "CLAUDE_MODEL claude-haiku-4-5 unknown to the API" in table["anthropic"][1]
    )
    assert table["stripe"] == ("problem", "top-ups off: STRIPE_WEBHOOK_SECRET and PUBLIC_URL not set")


async def test_check_lists_bad_settings_and_still_checks_the_rest(tmp_path, fakes):
    slack, claude, _ = fakes
    code, stdout, _ = await run_bot(tmp_path, environment(tmp_path, slack, claude, CLAUDE_MAX_TOKENS="lots"), "check")
    table = rows(stdout)
    assert code == 1
    assert table["settings"][0] == "problem" and "CLAUDE_MAX_TOKENS" in table["settings"][1]
    assert table["slack"][0] == "ok" and table["stripe"][0] == "off"


# --- a running bot: logs and metrics -------------------------------------------------------------------------


async def scrape(http: aiohttp.ClientSession, port: int, token: str | None = None) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def wait_for(condition, timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := condition()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


async def test_json_logs_and_metrics_of_a_running_bot(tmp_path, fakes):
    slack, claude, stripe = fakes
    claude.default.text = "The answer is forty-two, as it always was. " * 20  # several edits
    env = environment(
        tmp_path,
        slack,
        claude,
        LOG_FORMAT="json",
        METRICS_TOKEN="scrape-secret",
        SLACK_UPDATE_INTERVAL="0.2",
        SLACK_STREAMING="edit",
        STRIPE_SECRET_KEY=STRIPE_SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
        PUBLIC_URL="https://bot.example.com",
        STRIPE_API_BASE=stripe.api_base,
    )
    process = BotProcess(env, workdir=tmp_path)
    await process.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{process.port}/metrics") as response:
                assert response.status == 401
            before = await scrape(http, process.port, "scrape-secret")
            bot = BotHarness(slack, claude, stripe, None, http, port=process.port)
            sent = await bot.mention("What is the answer?")
            await wait_for(lambda: "forty-two" in bot.reply_text("C0001", sent.ts))
            delivery = {
                "id": "evt_metrics_1",
                "object": "event",
                "type": "customer.created",
                "data": {"object": {"id": "cus_1"}},
            }
            status, _ = await bot.stripe_delivery(delivery)
            assert status == 200
            answered = 'slackbot_answers_total{outcome="answered"}'
            for _ in range(100):  # the answer is counted once settled, just after its final text shows
                after = await scrape(http, process.port, "scrape-secret")
                if after.get(answered, 0) > before.get(answered, 0) and after["slackbot_event_loop_lag_seconds_count"]:
                    break  # the loop is sampled every 0.5 s
                await asyncio.sleep(0.1)

            def grew(name: str) -> float:
                return after.get(name, 0.0) - before.get(name, 0.0)

            assert grew(answered) == 1
            methods = {call.method for call in slack.calls if call.team_id == TEAM}
            assert all(grew(f'slackbot_slack_calls_total{{method="{method}"}}') >= 1 for method in methods), (
                methods,
                after,
            )
            assert (
                grew('slackbot_claude_tokens_total{kind="output"}') > 0
                and grew('slackbot_claude_tokens_total{kind="input"}') > 0
            )
            assert grew("slackbot_credits_charged_total") > 0
            assert grew("slackbot_first_text_seconds_count") == 1
            assert grew("slackbot_visible_lag_seconds_count") >= 1
            assert after["slackbot_event_loop_lag_seconds_count"] > 0
            assert "slackbot_scheduler_queue_depth" in after and "slackbot_schedulers" in after
            assert grew('slackbot_stripe_webhook_events_total{result="ignored",type="customer.created"}') == 1
            assert after['slackbot_credits_granted_total{kind="trial"}'] == 100000
    finally:
        code = await asyncio.to_thread(process.stop)
    assert code == 0
    records = [json.loads(line) for line in process.log().splitlines()]  # every line is one JSON object
    ready = [record for record in records if record["message"].startswith("bot ready")]
    assert len(ready) == 1 and ready[0]["level"] == "INFO"
    about_the_event = [record for record in records if record.get("event_id") == sent.event_id]
    assert about_the_event, records
    assert all(record["team_id"] == TEAM for record in about_the_event)
    tagged = [record for record in about_the_event if "claude_request_id" in record and "reservation_id" in record]
    assert tagged and tagged[0]["claude_request_id"].startswith("req_") and sent.event_id in tagged[0]["reservation_id"]
