"""Objectives being moved to vedgan.papers (see docs/architecture.md)."""
