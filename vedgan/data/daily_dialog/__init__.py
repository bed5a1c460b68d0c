"""TFDS builder for DailyDialog (``daily_dialog``)."""
from vedgan.data.daily_dialog.daily_dialog import DailyDialog

__all__ = ["DailyDialog"]
