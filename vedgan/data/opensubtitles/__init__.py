"""TFDS builder for monolingual OPUS OpenSubtitles (``opensubtitles``)."""
from vedgan.data.opensubtitles.opensubtitles import Opensubtitles

__all__ = ["Opensubtitles"]
