"""Output for people: rich tables and matplotlib figures."""
