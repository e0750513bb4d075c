"""Task registry (filled by the task modules)."""
