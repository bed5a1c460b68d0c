"""The data stack: where text comes from, how it becomes batches.

* :mod:`vedgan.data.sources`: datasets by config (TFDS builders by name, or
  your own files via :mod:`vedgan.data.custom`) and record helpers
  (``dialogue_pairs``, ``dialogue_examples``, ``sentences``,
  ``labelled_texts``);
* one folder per TFDS builder (``chatterbot_corpus``, ``daily_dialog``,
  ``empathetic_dialogues``, ``persona_chat``, ``sst2``, ``mojitalk_twitter``,
  ``coco_captions_texygen``, ``opensubtitles``, ``chitchat``) on
  :mod:`vedgan.data.builder_base`; ``python -m vedgan.data.prepare NAME``; after
  ``import vedgan.data`` they are in TFDS's catalogue too (``tfds.builder("daily_dialog")``,
  :mod:`vedgan.data.registration`);
* :mod:`vedgan.data.tokenizer`: sentencepiece and word vocabularies with fixed
  special ids;
* :mod:`vedgan.data.pipeline`: encoding with counted filtering, bucketed
  resumable per-process batches;
* :mod:`vedgan.data.inputs`: a run's inputs assembled from the config.

Importing this package imports nothing heavy (no TFDS: the builders are registered with
TFDS when TFDS itself is imported, see :mod:`vedgan.data.registration`); see
``docs/data.md``.
"""
from vedgan.data import registration as _registration

_registration.install()
