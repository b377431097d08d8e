"""Bad input, interruptions and stale files: every case gives one clear error or the right answer (kept forever)."""
