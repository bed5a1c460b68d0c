"""TFDS builder for SST-2 in the GLUE TSV release (``sst2``)."""
from vedgan.data.sst2.sst2 import Sst2

__all__ = ["Sst2"]
