"""Dialogue GAN made differentiable by the top-k softmax (López Zorrilla et al.):
``algorithm.py`` (Algorithm 1 as step specs), ``networks.py`` (the networks from the
config, ``W`` from word vectors), ``report.py`` (Section 5: Fig. 3 and Table 1 as
evaluation suites). The dialogue pairs need no per-example fields (no ``data.py``)."""
from vedgan.papers.topk_gan import algorithm  # noqa: F401  (registers "topk_gan")
from vedgan.papers.topk_gan import report  # noqa: F401  (registers the topk_gan_* suites)
