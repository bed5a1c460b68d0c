"""Latent-space language GAN (Kojima et al.): ``latent_gan`` (algorithm.py) and its MLE
LSTM language-model baseline ``lstm_lm`` (lstm_lm.py); sentence data (data.py), sampling
(sampling.py), Fig. 3 / Fig. 4 / Table 2 as evaluation suites (report.py)."""
from vedgan.papers.latent_gan import algorithm  # noqa: F401  (registers "latent_gan")
from vedgan.papers.latent_gan import lstm_lm  # noqa: F401  (registers "lstm_lm")
from vedgan.papers.latent_gan import report  # noqa: F401  (registers the latent_gan_* suites)
