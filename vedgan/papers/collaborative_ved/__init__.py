"""HRED / VHRED baselines and the collaborative VED (Shen et al., AAAI 2018):
``algorithm.py`` (the AE / CVAE phases as step specs), ``data.py`` (hierarchical
dialogue examples), ``report.py`` (Table 1, Table 2, Fig. 3 as evaluation suites)."""
from vedgan.papers.collaborative_ved import algorithm  # noqa: F401  (registers "collaborative_ved")
from vedgan.papers.collaborative_ved import report  # noqa: F401  (registers its suites)
