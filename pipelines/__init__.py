"""Orchestration: one module per user-facing job, each a function the CLI calls once."""
