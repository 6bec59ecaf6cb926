"""Slack-facing listeners, one package per surface; each only acknowledges, filters and hands over."""

from slack_bolt.async_app import AsyncApp

from bot.listeners import actions, commands, events


def register_listeners(app: AsyncApp) -> None:
    events.register(app)
    commands.register(app)
    actions.register(app)
