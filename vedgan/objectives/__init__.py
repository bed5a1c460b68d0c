from vedgan.objectives import seq2seq  # noqa: F401  (registers "seq2seq")
