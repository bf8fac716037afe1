"""Grids of train+eval runs: expansion, launchers, and the summary and paired tables."""
