"""Strategy dimensions and everything that turns a strategy and an example into text (no torch)."""
