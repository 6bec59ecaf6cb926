from slack_bolt.async_app import AsyncApp

from bot.listeners.actions import answer_settings, answers, buy, limits


def register(app: AsyncApp) -> None:
    buy.register(app)
    answers.register(app)
    limits.register(app)
    answer_settings.register(app)
