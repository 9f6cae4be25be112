"""Evaluations that print tables: citation behaviour (more as they land)."""
