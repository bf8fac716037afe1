"""A trained run: open its run dir, evaluate it, predict with it."""
