"""TFDS builder for the embedded English chatterbot corpus (``chatterbot_corpus``)."""
from vedgan.data.chatterbot_corpus.chatterbot_corpus import ChatterbotCorpus

__all__ = ["ChatterbotCorpus"]
