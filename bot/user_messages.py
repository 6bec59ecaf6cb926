"""Everything the bot says in Slack on its own behalf. Never exception text, never a secret."""

from __future__ import annotations

from bot.claude_stream import Failure

THINKING = "_Thinking…_"
# Slack's loading state of a thread while an answer gets ready (native and auto modes).
LOADING_STATUS = "is thinking…"
LOADING_MESSAGES = ["Reading your question…", "Thinking…", "Writing the answer…"]

HELP = (
    "Hi! Ask me anything by mentioning me with your question, for example "
    "`@{bot} how do I rotate a key?`, or send me a direct message. "
    "Follow-up questions in the same thread keep the conversation going.\n\n"
    "Answers are paid from this workspace's credits: `/credits` shows the balance and how to top up."
)

_FAILURES = {
    Failure.RATE_LIMITED: (
        "Claude is receiving too many requests right now, so I couldn't finish. Please try again in a minute."
    ),
    Failure.OVERLOADED: "Claude is overloaded right now, so I couldn't finish. Please try again in a few minutes.",
    Failure.UNAVAILABLE: "I couldn't reach Claude just now. Please try again in a few minutes.",
    Failure.REJECTED: (
        "Claude couldn't process this request (it may be too long). Try a shorter question or start a new thread."
    ),
    Failure.MISCONFIGURED: (
        "The bot's connection to Claude isn't set up correctly. Please let the person who runs this bot know."
    ),
    Failure.INTERRUPTED: "The answer was interrupted before it was finished. Please ask again.",
}

UNEXPECTED = "Something went wrong on my side while answering. Please try again."
NOT_STARTED = "⚠️ I couldn't start an answer just now (a problem on my side). Please try again in a minute."


def _with_request_id(text: str, request_id: str | None) -> str:
    return f"{text} _(request id: `{request_id}`)_" if request_id else text


def claude_failed(failure: Failure, request_id: str | None) -> str:
    return "⚠️ " + _with_request_id(_FAILURES[failure], request_id)


def cut_at_length_limit(max_tokens: int) -> str:
    return (
        f"✂️ _The answer was cut here because it reached the length limit ({max_tokens:,} tokens). "
        "Ask me to continue if you need the rest._"
    )


REFUSED = "🚫 _Claude declined to answer this request._"

HISTORY_NOT_LOADED = (
    "_I couldn't read the earlier messages of this conversation just now, so this answer is based on your "
    "message alone._"
)

INTERRUPTED_BY_RESTART = (
    "⚠️ _This answer was interrupted before it was finished (the bot was restarted). "
    "Please ask again: mention me with your question, or send it again here._"
)

NOT_ANSWERED_BY_RESTART = (
    "⚠️ I couldn't answer this question because the bot was restarted just as it arrived. "
    "Please ask again: mention me with your question, or send it again here."
)

HISTORY_UNAVAILABLE = (
    "_I couldn't read the earlier messages of this thread (Slack limits how often apps may read threads), "
    "so this answer is based on your message alone._"
)


def insufficient_credits(available: int, price: str) -> str:
    return (
        f"This workspace doesn't have enough credits for an answer: *{available:,}* credits available, "
        f"and {price}. Use `/credits` to see the balance and top up."
    )


def files_cost_too_much(available: int, needed: int, price: str) -> str:
    return (
        f"This workspace doesn't have enough credits for a question with these files: reading them may take up to "
        f"*{needed:,}* credits, and *{available:,}* are available ({price}). Use `/credits` to top up, or ask "
        "with fewer or smaller files."
    )


def files_not_read(problems: list[tuple[str, str]]) -> str:
    """One line per file Claude was not shown: its name and why."""
    return "\n".join(f"📎 _I couldn't read *{name}*: {reason}._" for name, reason in problems)


def sources(pages: dict[str, str]) -> str:
    """The web pages an answer cites, as Markdown links (the answer is Markdown); titles come from the web."""

    def title(text: str) -> str:
        return "".join(f"\\{c}" if c in "[]()\\" else c for c in " ".join(text.split()))[:120]

    links = " · ".join(f"[{title(name)}]({url.replace(')', '%29').replace(' ', '%20')})" for url, name in pages.items())
    return f"🔎 _Sources:_ {links}"


NOTHING_TO_READ = "I couldn't read any of the files you shared, and there was no question to answer without them."


PER_PERIOD = {"day": "a day", "month": "a month"}
THIS_PERIOD = {"day": "today", "month": "this month"}


def limit_subject(scope: str, subject: str) -> str:
    return {"user": f"<@{subject}>", "channel": f"<#{subject}>", "default": "everyone without a limit of their own"}[
        scope
    ]


def over_limit(over) -> str:
    """`over`: billing.OverLimit. Names the limit, what was used, and when it resets."""
    limit = over.limit
    whose = {"user": "your limit", "default": "this workspace's limit per person", "channel": "this channel's limit"}[
        limit.scope
    ]
    return (
        f"This question would go over {whose} of *{limit.credits:,}* credits {PER_PERIOD[limit.period]}: "
        f"{over.used:,} used {THIS_PERIOD[limit.period]}, and an answer can cost up to {over.needed:,}. "
        f"It resets at {over.resets_at:%H:%M} UTC on {over.resets_at:%b %-d} "
        "(limits count calendar days and months in UTC). "
        "A workspace admin can change it with `/credits limit`."
    )


def answer_cost(charged: int, balance: int) -> str:
    return f"{charged:,} credit{'' if charged == 1 else 's'} · balance {balance:,}"


def low_balance(balance: int) -> str:
    return f"💳 _Heads-up: this workspace has {balance:,} credits left. Use `/credits` to top up._"


def low_balance_dm(balance: int, threshold: int) -> str:
    return (
        f"💳 This workspace's Claude credits are running low: {balance:,} left (below {threshold:,}). "
        "Use `/credits` to top up before answers stop."
    )


def with_notices(*notices: str | None) -> str:
    """Notices shown under an answer, separated from it by a blank line."""
    present = [notice for notice in notices if notice]
    return "".join(f"\n\n{notice}" for notice in present)


def stopped_by(user_id: str | None) -> str:
    return f"⏹️ _Stopped by <@{user_id}>._" if user_id else "⏹️ _Stopped._"


def only_the_asker_can_stop(asker: str) -> str:
    return f"Only <@{asker}> (who asked) or a workspace admin can stop this answer."


ALREADY_FINISHED = "This answer is already finished."
FEEDBACK_THANKS = "Thanks for the feedback! It helps whoever runs this bot see how the answers are doing."
