from vedgan.objectives import seq2seq  # noqa: F401  (registers "seq2seq")
from vedgan.objectives import latent_gan  # noqa: F401  (registers "latent_gan", "lstm_lm")
from vedgan.objectives import happybot  # noqa: F401  (registers "happybot")
from vedgan.objectives import collaborative_ved  # noqa: F401  (registers "collaborative_ved")
