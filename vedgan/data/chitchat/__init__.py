"""TFDS builder for the Chit-Chat Challenge corpus (``chitchat``)."""
from vedgan.data.chitchat.chitchat import Chitchat

__all__ = ["Chitchat"]
