"""HappyBot (Shin et al. 2019): sentiment look-ahead rewards, REINFORCE with a learned
per-timestep baseline (docs/happybot.md)."""
from vedgan.papers.happybot import algorithm  # noqa: F401  (registers "happybot")
from vedgan.papers.happybot import report  # noqa: F401  (registers the happybot_* suites)
