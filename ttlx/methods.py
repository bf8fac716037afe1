"""The paper's methods as one table."""
