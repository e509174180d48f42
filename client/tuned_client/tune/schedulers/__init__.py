"""Trial schedulers (FIFO is the default)."""
