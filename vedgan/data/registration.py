"""vedgan's corpora in TFDS's catalogue: ``tfds.builder("daily_dialog")`` after one import.

    import vedgan.data
    import tensorflow_datasets as tfds
    tfds.builder("daily_dialog", data_dir="...")     # vedgan's DailyDialog builder
    tfds.data_source("chatterbot_corpus", split="train",           # any TFDS entry point
                     builder_kwargs={"file_format": "array_record"})  # (no TensorFlow)

TFDS looks builder names up through its *builder providers*
(``tfds.core.add_dataset_builder_provider``, public API in every TFDS vedgan supports):
:func:`register` adds one, :class:`ShippedBuilders`, in front of TFDS's own, answering for
the names of :data:`SHIPPED` and importing a builder's module only when TFDS asks for that
name. (Importing a builder module also registers its class the classic way, by
subclassing; the provider is what makes the names known before anything is imported.)

**Lightness.** ``vedgan.train`` imports ``vedgan.data`` (through ``vedgan.data.inputs``)
and must not pay for TFDS, which custom text formats and the oracle corpus do not use. So
``import vedgan.data`` calls :func:`install`, which imports nothing but the standard
library: if TFDS is already imported it registers at once; otherwise it puts a one-shot
finder on ``sys.meta_path`` that recognises the import of ``tensorflow_datasets`` (by
anyone: the user, a vedgan builder, ``sources.prepare_builder``), lets TFDS's package run
as usual, registers right after it, and removes itself. No other import is touched.

**Names.** The TFDS names are vedgan's ``data.name`` values (``"persona_chat/self_original"``
selects a config in both). None is in TFDS's own catalogue (pinned by
``tests/test_data_tfds_conventions.py`` against the installed TFDS). Were a future TFDS to
ship one of them, that builder's class would get a distinct TFDS ``name``
(``vedgan_<name>``) while its ``data.name`` stays the key of ``sources.BUILDERS``.
"""
from __future__ import annotations

import importlib
import sys

#: vedgan's TFDS builders: name (TFDS's and ``config.data.name``) -> ``"module:Class"``.
SHIPPED: dict[str, str] = {
    "chatterbot_corpus":
        "vedgan.data.chatterbot_corpus.chatterbot_corpus:ChatterbotCorpus",
    "chitchat": "vedgan.data.chitchat.chitchat:Chitchat",
    "daily_dialog": "vedgan.data.daily_dialog.daily_dialog:DailyDialog",
    "empathetic_dialogues": ("vedgan.data.empathetic_dialogues."
                             "empathetic_dialogues:EmpatheticDialogues"),
    "persona_chat": "vedgan.data.persona_chat.persona_chat:PersonaChat",
    "sst2": "vedgan.data.sst2.sst2:Sst2",
    "mojitalk_twitter":
        "vedgan.data.mojitalk_twitter.mojitalk_twitter:MojitalkTwitter",
    "coco_captions_texygen": ("vedgan.data.coco_captions_texygen."
                              "coco_captions_texygen:CocoCaptionsTexygen"),
    "opensubtitles": "vedgan.data.opensubtitles.opensubtitles:Opensubtitles",
}

_TFDS = "tensorflow_datasets"
_registered = False


def load_class(entry: str | type) -> type:
  """``"module:Class"`` -> the class (imports the module); a class is returned as is."""
  if isinstance(entry, str):
    module_name, _, class_name = entry.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
  return entry


class ShippedBuilders:
  """A TFDS builder provider (``tfds.core.DatasetBuilderProvider``) for :data:`SHIPPED`."""

  def has_dataset(self, name: str) -> bool:
    return name in SHIPPED

  def get_builder_cls(self, name: str) -> type:
    return load_class(SHIPPED[name])


def register() -> bool:
  """Adds :class:`ShippedBuilders` in front of TFDS's providers (imports TFDS); once.

  Returns:
    True if this call added it, False if an earlier one had.
  """
  global _registered
  if _registered:
    return False
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.core.add_dataset_builder_provider(ShippedBuilders(), index=0)
  _registered = True
  return True


class _RegisterAfterTfds:
  """Wraps TFDS's own loader (an ``importlib.abc.Loader``; not subclassed, to keep this
  module's imports to ``importlib`` and ``sys``): runs it, then :func:`register`."""

  def __init__(self, loader):
    self.loader = loader

  def __getattr__(self, name):  # is_package, get_resource_reader, ...: TFDS's loader's
    return getattr(self.loader, name)

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    # TFDS's package sees its own loader, as it would without vedgan.
    module.__loader__ = self.loader
    if getattr(module, "__spec__", None) is not None:
      module.__spec__.loader = self.loader
    self.loader.exec_module(module)
    uninstall()
    try:
      register()
    except Exception as e:  # pylint: disable=broad-except
      # Never break the user's `import tensorflow_datasets`; say why vedgan's names are missing.
      import logging  # pylint: disable=g-import-not-at-top
      logging.getLogger(__name__).warning(
          "could not register vedgan's TFDS builders (%s: %s); "
          "call vedgan.data.registration.register()", type(e).__name__, e)


class TfdsImportHook:
  """A meta path finder on ``sys.meta_path`` until TFDS is imported: hands out TFDS's spec
  with its loader wrapped in :class:`_RegisterAfterTfds`. Any other name: None (the next
  finder decides)."""

  vedgan_tfds_hook = True  # (found again after importlib.reload of this module)

  def find_spec(self, fullname, path=None, target=None):
    if fullname != _TFDS:
      return None
    for finder in list(sys.meta_path):
      if getattr(finder, "vedgan_tfds_hook", False) or not hasattr(finder, "find_spec"):
        continue
      spec = finder.find_spec(fullname, path, target)
      if spec is not None:
        break
    else:
      return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
      spec.loader = _RegisterAfterTfds(spec.loader)
    return spec


def _hooks() -> list:
  return [f for f in sys.meta_path if getattr(f, "vedgan_tfds_hook", False)]


def uninstall() -> None:
  """Takes the hook off ``sys.meta_path`` (if it is there)."""
  for hook in _hooks():
    sys.meta_path.remove(hook)


def install() -> None:
  """Registers now if TFDS is imported, else arms :class:`TfdsImportHook` (once)."""
  if _registered:
    return
  tfds = sys.modules.get(_TFDS)
  if tfds is not None and hasattr(getattr(tfds, "core", None), "add_dataset_builder_provider"):
    register()
    return
  if not _hooks():
    sys.meta_path.insert(0, TfdsImportHook())
