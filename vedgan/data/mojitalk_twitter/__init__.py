"""TFDS builder for the MojiTalk Twitter emoji corpus (``mojitalk_twitter``)."""
from vedgan.data.mojitalk_twitter.mojitalk_twitter import MojitalkTwitter

__all__ = ["MojitalkTwitter"]
