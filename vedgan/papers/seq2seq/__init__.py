"""Seq2seq with Luong attention trained by maximum likelihood: the baseline every
paper starts from, and the smallest objective (see docs/architecture.md)."""
from vedgan.papers.seq2seq import algorithm  # noqa: F401  (registers "seq2seq")
