"""One package per paper: ``algorithm.py`` (step specs and losses, read like the
paper's algorithm box), ``data.py`` (that paper's per-example fields) and
``report.py`` (its tables and figures as evaluation suites). Importing this
package registers every objective."""
from vedgan.papers import seq2seq  # noqa: F401
from vedgan.papers import collaborative_ved  # noqa: F401
from vedgan.papers import mojitalk  # noqa: F401
from vedgan.papers import happybot  # noqa: F401
from vedgan.papers import latent_gan  # noqa: F401
from vedgan.papers import topk_gan  # noqa: F401
