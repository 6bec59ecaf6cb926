"""The manifest an admin pastes into Slack asks for exactly what the code uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.installs import BOT_SCOPES
from bot.surfaces.app_home import SUGGESTED_PROMPTS

MANIFEST = yaml.safe_load((Path(__file__).resolve().parent.parent / "manifest.yml").read_text())


def test_the_manifest_asks_for_the_scopes_an_install_asks_for():
    assert sorted(MANIFEST["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)


def test_the_manifest_subscribes_to_every_event_the_bot_listens_to():
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    assert {
        "app_mention",
        "message.im",
        "app_home_opened",
        "app_uninstalled",
        "tokens_revoked",
        "agent_session_stopped",
    } <= events
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True


def test_the_agent_view_suggests_what_the_messages_tab_suggests():
    agent_view = MANIFEST["features"]["agent_view"]
    assert agent_view["agent_description"]
    assert agent_view["suggested_prompts"] == SUGGESTED_PROMPTS
    assert len(SUGGESTED_PROMPTS) <= 4


def test_the_fake_grants_a_token_the_scopes_the_manifest_asks_for():
    from tests.fakes.slack import MANIFEST_SCOPES

    assert sorted(MANIFEST_SCOPES.split(",")) == sorted(MANIFEST["oauth_config"]["scopes"]["bot"])
