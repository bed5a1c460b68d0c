"""TFDS builder for Texygen's COCO-captions split (``coco_captions_texygen``)."""
from vedgan.data.coco_captions_texygen.coco_captions_texygen import \
    CocoCaptionsTexygen

__all__ = ["CocoCaptionsTexygen"]
