"""What billing counts for `/metrics` (prometheus-client's default registry, which the bot exposes)."""

from __future__ import annotations

from prometheus_client import Counter

CREDITS_GRANTED = Counter(
    "slackbot_credits_granted", "Credits added to balances (purchases, auto-reloads, free credits, grants)", ["kind"]
)
STRIPE_WEBHOOK_EVENTS = Counter(
    "slackbot_stripe_webhook_events", "Stripe webhook deliveries by event type and result", ["type", "result"]
)
