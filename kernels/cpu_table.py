"""Placeholder until bench writes it."""

TIMINGS_MS = [(1024, 1024, 0.01, 1.0, 1.0)]
