"""What `/credits` shows a workspace: its balance, what answers cost, recent usage and how to top up."""

from __future__ import annotations

from billing import Balance, UsageSummary


def credits_blocks(
    balance: Balance, usage: UsageSummary, price: str, *, top_up: list[dict] | None, top_up_note: str
) -> list[dict]:
    lines = [
        f"*Available:* {balance.available:,} credits",
        f"*Balance:* {balance.balance:,} credits, of which {balance.reserved:,} reserved for answers in progress",
        f"*An answer costs:* {price}",
        f"*Last 30 days:* {usage.total:,} credits over {usage.answers:,} answers",
    ]
    if usage.by_user:
        top = ", ".join(f"<@{user}> {spent:,}" if user else f"others {spent:,}" for user, spent in usage.by_user)
        lines.append(f"*Top users:* {top}")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Credits for this workspace"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
    ]
    if top_up:
        blocks.append({"type": "actions", "block_id": "buy_credits", "elements": top_up})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": top_up_note}]})
    return blocks


def credits_summary_text(balance: Balance) -> str:
    return f"This workspace has {balance.available:,} credits available."
