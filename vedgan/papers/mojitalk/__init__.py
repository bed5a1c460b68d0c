"""MojiTalk (Zhou & Wang, ACL 2018): emoji-conditioned CVAE with a bag-of-words loss, a
DeepMoji emoji classifier and the Reinforced CVAE (docs/mojitalk.md)."""
from vedgan.papers.mojitalk import algorithm  # noqa: F401  (registers "mojitalk")
from vedgan.papers.mojitalk import report  # noqa: F401  (registers the mojitalk_* suites)
