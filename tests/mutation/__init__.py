"""Semantic mutation testing of the papers' objectives (see CONTRIBUTING.md)."""
