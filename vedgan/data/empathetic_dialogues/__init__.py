"""TFDS builder for EmpatheticDialogues (``empathetic_dialogues``)."""
from vedgan.data.empathetic_dialogues.empathetic_dialogues import \
    EmpatheticDialogues

__all__ = ["EmpatheticDialogues"]
