"""One package per paper: ``algorithm.py`` (step specs and losses, read like the
paper's algorithm box), ``data.py`` (that paper's per-example fields) and
``report.py`` (its tables and figures as evaluation suites). Importing this
package registers every objective."""
from vedgan.papers import seq2seq  # noqa: F401
