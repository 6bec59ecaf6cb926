"""The Slack bot: the Bolt app, its listeners, and answering questions with Claude while Slack delivers them."""
