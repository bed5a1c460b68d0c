"""What every vedgan TFDS builder shares: locating the data, reading lines, counting skips.

A builder subclasses :class:`VedganBuilder` and declares

* ``RESOURCES``: ``{key: Resource(url, filename)}``, the released files. ``url``
  is ``None`` where the data cannot be downloaded automatically.
* ``MANUAL_HELP``: one line saying what to put in ``manual_dir``.
* ``_find(paths, dl_manager)``: given ``{key: path}`` (an extracted archive directory, a
  plain file, or ``manual_dir`` itself), returns the files it needs or
  ``None``.

Where the data comes from (:meth:`VedganBuilder.locate`):

1. ``manual_dir`` (``config.data.manual_dir``, default ``DATA_DIR/downloads/manual``; one
   that is set but missing or empty is a :class:`vedgan.errors.DataError` before TFDS
   runs), if it holds anything (TFDS's ``dl_manager.manual_dir``): for each resource, the
   released file ``filename`` there (an archive is extracted first), else ``manual_dir``
   itself holding the already extracted files;
2. otherwise the resources' URLs, downloaded by TFDS and verified against the size and
   sha256 in ``checksums.tsv`` next to the builder's module (TFDS's format, one
   ``url<TAB>size<TAB>sha256<TAB>filename`` per line); a URL without an entry is used
   unverified, with a warning (see ``docs/data.md``, "Checksums");
3. otherwise a one-line :class:`vedgan.errors.DataError` saying where to get
   the data and where to put it.

Bad lines (undecodable bytes, wrong number of fields, mismatched label counts)
never stop a build: they are skipped and counted per split and reason, and the
counts are stored in the dataset's metadata (``builder.info.metadata["skipped"]``,
written to ``metadata.json``).
"""
from __future__ import annotations

import abc
import bz2
import collections
import dataclasses
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import sys
import tarfile
import uuid
import zipfile
from typing import Optional

from etils import epath
import tensorflow_datasets as tfds
# (a public name that tfds.download does not re-export; here in TFDS 4.9.8 through 4.9.10)
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from vedgan.data.textio import clean, read_lines  # noqa: F401 (re-exported)
from vedgan.errors import DataError

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclasses.dataclass(frozen=True)
class Resource:
  """A released file: where it is downloaded from and what it is called."""
  url: Optional[str]
  filename: str


def without_bucket_lookup(info: tfds.core.DatasetInfo) -> tfds.core.DatasetInfo:
  """``info`` with TFDS's look-up of precomputed metadata in its GCS bucket turned off.

  TFDS runs that look-up whenever it constructs a builder whose data is not prepared yet,
  and it creates an empty ``tmp*tfds`` directory in the system temp folder before
  checking anything, never removing it: one left behind per construction (two per
  ``download_and_prepare`` of a fresh ``data_dir``). None of vedgan's datasets is in that
  bucket, so the look-up is skipped for every vedgan builder (``_info`` returns this).
  """
  info.initialize_from_bucket = lambda: None
  return info


def first_existing(root, *relative) -> Optional[epath.Path]:
  """The first of ``root / r`` that exists (``root`` itself for ``""``)."""
  root = epath.Path(root)
  for r in relative:
    candidate = root / r if r else root
    if candidate.exists():
      return candidate
  return None


def split_files(root: Optional[epath.Path], names: dict) -> Optional[dict]:
  """``{split: root / name}`` when every one of those files exists, else None."""
  if root is None:
    return None
  files = {split: root / name for split, name in names.items()}
  return files if all(p.exists() for p in files.values()) else None


def archive_kind(path) -> Optional[str]:
  """``"zip"``, ``"tar"``, ``"gz"``, ``"bz2"``, ``"xz"`` (by content), or None."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    return None
  if zipfile.is_zipfile(path):
    return "zip"
  try:
    if tarfile.is_tarfile(path):  # also compressed tars
      return "tar"
  except (OSError, EOFError, tarfile.TarError, lzma.LZMAError):
    pass
  with open(path, "rb") as f:
    head = f.read(6)
  for kind, magic in (("gz", _GZIP_MAGIC), ("bz2", _BZ2_MAGIC),
                      ("xz", _XZ_MAGIC)):
    if head.startswith(magic):
      return kind
  return None


def _safe_members(names, root: str) -> None:
  root = os.path.realpath(root)
  for name in names:
    target = os.path.realpath(os.path.join(root, name))
    if target != root and not target.startswith(root + os.sep):
      raise DataError(f"archive member {name!r} would be written outside "
                      f"{root}; refusing to extract")


def _extract_tar(archive: tarfile.TarFile, root: str) -> None:
  """Writes the folders and regular files of ``archive`` under ``root`` (names checked by
  :func:`_safe_members`), the same on every Python (``extractall``'s ``filter`` argument
  is missing from older ones, and even its ``"data"`` filter keeps links). A link, device
  or other special member is refused: a symbolic link inside the archive could point a
  later member outside ``root``."""
  for member in archive.getmembers():
    target = os.path.join(root, member.name)
    if member.isdir():
      os.makedirs(target, exist_ok=True)
    elif member.isfile():
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with archive.extractfile(member) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    else:
      kind = "link" if member.issym() or member.islnk() else "special file"
      raise DataError(f"archive member {member.name!r} is a {kind}; refusing to extract "
                      f"{archive.name} (a dataset archive holds only folders and files)")


def extract_archive(path, dest_root) -> epath.Path:
  """Extracts ``path`` (zip / tar[.gz|.bz2|.xz] / .gz / .bz2 / .xz) once.

  Pure Python (TFDS's own extractor needs TensorFlow). The result goes to
  ``dest_root/<name>.<key>/`` (``key`` from the path, size and mtime), written
  to a temporary folder and renamed into place, so a reader never sees a
  partial extraction and a second call reuses it. A single compressed file
  ``x.txt.gz`` becomes ``<dest>/x.txt``.

  Returns:
    The extraction folder.
  """
  path = os.fspath(path)
  kind = archive_kind(path)
  if kind is None:
    raise DataError(f"{path} is not an archive this builder can extract")
  stat = os.stat(path)
  key = hashlib.sha256(f"{os.path.abspath(path)}:{stat.st_size}:"
                       f"{stat.st_mtime_ns}".encode()).hexdigest()[:16]
  dest_root = os.fspath(dest_root)
  dest = os.path.join(dest_root, f"{os.path.basename(path)}.{key}")
  if os.path.isdir(dest):
    return epath.Path(dest)
  os.makedirs(dest_root, exist_ok=True)
  tmp = os.path.join(dest_root, f".{os.path.basename(dest)}.tmp-{uuid.uuid4().hex}")
  os.makedirs(tmp)
  try:
    if kind == "zip":
      with zipfile.ZipFile(path) as z:
        _safe_members(z.namelist(), tmp)
        z.extractall(tmp)
    elif kind == "tar":
      with tarfile.open(path) as t:
        _safe_members(t.getnames(), tmp)
        _extract_tar(t, tmp)
    else:
      opener = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
      name = os.path.basename(path)
      for suffix in (".gz", ".tgz", ".bz2", ".xz"):
        if name.endswith(suffix):
          name = name[:-len(suffix)]
          break
      with opener(path, "rb") as src, open(os.path.join(tmp, name or "data"),
                                           "wb") as out:
        shutil.copyfileobj(src, out)
    try:
      os.replace(tmp, dest)
    except OSError:  # another process extracted it first
      shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return epath.Path(dest)


class VedganBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base class of vedgan's TFDS builders (array_record, no TensorFlow)."""

  #: ``{key: Resource}``: the released files.
  RESOURCES: dict = {}
  #: Where a person gets the data (shown in errors).
  HOMEPAGE = ""
  #: What ``manual_dir`` must hold (one line, shown in errors).
  MANUAL_HELP = ""
  #: Extract downloaded / manually placed archives (False: read them as is,
  #: e.g. a huge .gz text streamed line by line).
  EXTRACT = True

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The builder's own file (where TFDS looks for ``checksums.tsv``).

    TFDS 4.9's default, for a builder inside a package, imports the
    ``importlib_resources`` back-port, which vedgan does not depend on.
    """
    return epath.Path(sys.modules[cls.__module__].__file__)

  @tfds.core.utils.classproperty
  @classmethod
  def MANUAL_DOWNLOAD_INSTRUCTIONS(cls) -> str:  # pylint: disable=invalid-name
    return (f"Get the data from {cls.HOMEPAGE} and put {cls.MANUAL_HELP} in "
            "the manual directory (config.data.manual_dir).")

  #: The split names this builder writes; the default ``_split_generators``
  #: hands ``_generate_examples(split, files[split])`` each of them.
  SPLIT_NAMES: tuple = ("train", "validation", "test")

  # -- helpers for subclasses --------------------------------------------------
  @abc.abstractmethod
  def _find(self, paths: dict, dl_manager) -> Optional[dict]:
    """``{key: path}`` -> the files ``_split_generators`` needs, or None.

    ``dl_manager.extract(path)`` extracts a nested archive (cached).
    """

  def _split_generators(self, dl_manager):
    files = self.locate(dl_manager)
    return {split: self.checked(split, self._generate_examples(split, files[split]))
            for split in self.SPLIT_NAMES}

  def skip_counter(self, split: str) -> collections.Counter:
    """The counter of skipped items of ``split`` (saved in the metadata)."""
    if not hasattr(self, "_skips"):
      self._skips = {}
    return self._skips.setdefault(split, collections.Counter())

  def checked(self, split: str, examples):
    """Passes ``examples`` through; a split that yields none is a DataError.

    (TFDS would otherwise fail with an AssertionError deep in its writer.) When the
    split is exhausted its skip counts go into ``info.metadata`` (:meth:`record_skips`):
    TFDS writes every split before it saves the metadata, so the saved counts are final.
    """
    count = 0
    for key, example in examples:
      count += 1
      yield key, example
    if not count:
      skipped = dict(self.skip_counter(split))
      raise DataError(f"{self.name}: split {split!r} has no usable examples "
                      f"(skipped: {skipped or 'none'}); check the data files")
    self.record_skips(split)

  def record_skips(self, split: Optional[str] = None) -> None:
    """Copies every split's skip counters into ``info.metadata["skipped"]``
    (``{split: {reason: count}}``) and logs those of ``split`` (all if None)."""
    skips = {name: dict(sorted(c.items()))
             for name, c in sorted(getattr(self, "_skips", {}).items())}
    self.info.metadata["skipped"] = skips
    for name, c in skips.items():
      if c and split in (None, name):
        log.warning("%s %s: skipped %s", self.name, name, c)

  def make_info(self, description: str, features: dict, citation: str,
                license: str) -> tfds.core.DatasetInfo:  # pylint: disable=redefined-builtin
    """``DatasetInfo`` with the homepage and a metadata dict for skip counts."""
    return without_bucket_lookup(self.dataset_info_from_configs(
        description=description,
        features=tfds.features.FeaturesDict(features),
        homepage=self.HOMEPAGE,
        citation=citation,
        license=license,
        metadata=tfds.core.MetadataDict(),
    ))

  def locate(self, dl_manager) -> dict:
    """Finds the released files (see the module docstring).

    Raises:
      DataError: one line naming the homepage, the URL(s) and the manual
        directory, if the data is neither in ``manual_dir`` nor downloadable, or if a
        download does not match the builder's ``checksums.tsv``.
    """
    manual = self.usable_manual_dir(dl_manager)
    if manual is not None:
      paths = {}
      for key, res in self.RESOURCES.items():
        released = manual / res.filename
        paths[key] = (self._maybe_extract(released, dl_manager)
                      if released.is_file() else manual)
      found = self._find(paths, dl_manager)
      if found is not None:
        return found
      raise DataError(
          f"{self.name}: the manual directory {manual} does not hold "
          f"{self.MANUAL_HELP}; get the data from {self.HOMEPAGE}")
    # (vedgan's prepare_builder refuses a configured manual_dir that is missing or empty,
    # so the folder without the files is TFDS's default one.)
    where = epath.Path(dl_manager.download_dir) / "manual"
    urls = {k: r.url for k, r in self.RESOURCES.items()}
    if not urls or any(u is None for u in urls.values()):
      raise DataError(
          f"{self.name} cannot be downloaded automatically: get it from "
          f"{self.HOMEPAGE} and put {self.MANUAL_HELP} in {where} (or set "
          "config.data.manual_dir to the folder holding it)")
    self.warn_unverified(urls.values(), dl_manager)
    try:
      paths = dl_manager.download(urls)
    except NonMatchingChecksumError as e:
      raise DataError(
          f"{self.name}: a download does not match the size/sha256 in {self.checksums_path()} "
          f"({' '.join(str(e).split())[:300]}); the file on the server changed or the "
          f"download was damaged: delete {dl_manager.download_dir} and retry, or put "
          f"{self.MANUAL_HELP} in {where} (or set config.data.manual_dir)") from None
    except Exception as e:  # pylint: disable=broad-except
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise DataError(
          f"{self.name}: downloading {', '.join(urls.values())} failed "
          f"({type(e).__name__}: {first[:200]}); on a connected machine "
          f"download it (see {self.HOMEPAGE}) and put {self.MANUAL_HELP} in "
          f"{where} (or set config.data.manual_dir)") from None
    found = self._find({k: self._maybe_extract(epath.Path(p), dl_manager)
                        for k, p in paths.items()}, dl_manager)
    if found is None:
      raise DataError(f"{self.name}: the downloaded files do not have the "
                      f"expected layout ({self.MANUAL_HELP})")
    return found

  @classmethod
  def checksums_path(cls) -> epath.Path:
    """``checksums.tsv`` next to the builder's module (where TFDS reads and registers the
    sizes and sha256 of its downloads: ``url<TAB>size<TAB>sha256<TAB>filename``)."""
    return cls.code_path.parent / "checksums.tsv"

  def warn_unverified(self, urls, dl_manager) -> list:
    """Logs (and returns) the ``urls`` that ``checksums.tsv`` does not list.

    TFDS downloads such a file without verifying it (recording it when registering, and
    refusing it with ``force_checksums_validation``: ``python -m vedgan.data.prepare NAME
    --register_checksums`` / ``--force_checksums_validation``).
    """
    known = self.url_infos or {}
    missing = [u for u in urls if u not in known]
    if missing and not dl_manager.register_checksums:
      log.warning("%s: no size/sha256 registered for %s in %s: the download is not verified "
                  "(python -m vedgan.data.prepare %s --register_checksums records it)",
                  self.name, ", ".join(missing), self.checksums_path(), self.name)
    return missing

  def extract(self, path, dl_manager) -> epath.Path:
    """Extracts an archive (e.g. a nested one) under the download folder."""
    return extract_archive(path, epath.Path(dl_manager.download_dir) /
                           "extracted")

  def _maybe_extract(self, path, dl_manager) -> epath.Path:
    if self.EXTRACT and archive_kind(path) is not None:
      return self.extract(path, dl_manager)
    return epath.Path(path)

  @staticmethod
  def usable_manual_dir(dl_manager) -> Optional[epath.Path]:
    """``dl_manager.manual_dir`` (TFDS's public property) if that folder exists and is not
    empty, else None (the property raises AssertionError then)."""
    try:
      return epath.Path(dl_manager.manual_dir)
    except (AssertionError, ValueError):
      return None
