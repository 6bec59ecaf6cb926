"""What people see of the bot besides its answers: the Home tab, the `/credits` view and the top-up flow,
the welcome DM to an installer, the purchase DMs, and the buttons under an answer (Stop, feedback)."""
