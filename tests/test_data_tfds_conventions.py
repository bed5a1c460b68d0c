"""vedgan's TFDS builders follow TFDS's conventions (issue 23, item 6).

* one ``import vedgan.data`` puts every shipped builder in TFDS's catalogue, whatever is
  imported first, and ``import vedgan.train`` still does not import TFDS (fresh
  interpreters);
* no name clashes with TFDS's own catalogue;
* the data dir: explicit > ``$VEDGAN_DATA_DIR`` > ``$TFDS_DATA_DIR`` > vedgan's default;
* ``checksums.tsv`` next to every downloading builder, in TFDS's format, read by TFDS, and
  enforced: a download is served from a local HTTP server to a builder written into
  ``tmp_path``, so verification, ``--force_checksums_validation`` and
  ``--register_checksums`` run TFDS's real download code;
* no TFDS private attribute and no override of a TFDS protected method other than the
  builder hooks TFDS documents.
"""
import ast
import contextlib
import functools
import hashlib
import http.server
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest
import tensorflow_datasets as tfds

from vedgan.data import prepare, registration, sources
from vedgan.errors import ConfigError, DataError

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "vedgan" / "data"
CHITCHAT_TESTDATA = ROOT / "tests" / "testdata" / "chitchat"
#: The shipped builders that download but have no published size/sha256 (docs/data.md).
UNVERIFIED = {"opensubtitles"}
#: TFDS's documented builder hooks, the only protected methods a builder may define.
BUILDER_HOOKS = {"_info", "_split_generators", "_generate_examples"}


def _run(code: str, env=None) -> dict:
  """Runs ``code`` in a fresh interpreter; returns the JSON its last stdout line prints."""
  full_env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  full_env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# -- registration ---------------------------------------------------------------------------

_CHECK_CATALOGUE = """
import json, sys
before = "tensorflow_datasets" in sys.modules
import tensorflow_datasets as tfds
from vedgan.data import registration
out = {"tfds_before": before, "classes": {}, "hooks": [],
       "loader_is_tfds": type(tfds.__spec__.loader).__module__.startswith("_frozen"),
       "hook_left": any(getattr(f, "vedgan_tfds_hook", False) for f in sys.meta_path)}
for name in registration.SHIPPED:
  cls = tfds.builder_cls(name)
  out["classes"][name] = [cls.__module__ + ":" + cls.__qualname__, cls.name]
b = tfds.builder("persona_chat/both_revised", data_dir="{data}")
out["config"] = [type(b).__name__, b.builder_config.name]
print(json.dumps(out))
"""


@pytest.mark.parametrize("first", [
    "import vedgan.data",
    "import vedgan.train",
    "import tensorflow_datasets\nimport vedgan.data",
    "from vedgan.data import builder_base",
    "from vedgan.data.daily_dialog import daily_dialog",
    "from vedgan.data import sources\nsources.builder_class('sst2')",
], ids=["vedgan.data", "vedgan.train", "tfds_first", "builder_base_first", "a_builder_first",
        "sources"])
def test_one_import_puts_every_builder_in_tfds_catalogue(first, tmp_path):
  out = _run(first + "\n" + _CHECK_CATALOGUE.replace("{data}", str(tmp_path)))
  assert out["classes"] == {name: [entry, name] for name, entry in registration.SHIPPED.items()}
  assert out["config"] == ["PersonaChat", "both_revised"]
  # TFDS's package runs with its own loader, and the one-shot hook is gone afterwards
  assert out["loader_is_tfds"] and not out["hook_left"]
  if first in ("import vedgan.data", "import vedgan.train"):
    assert not out["tfds_before"]       # registering did not import TFDS


def test_vedgan_train_and_vedgan_data_do_not_import_tfds():
  out = _run("import json, sys\nimport vedgan.train, vedgan.data\n"
             "print(json.dumps([m for m in sys.modules if m.split('.')[0] in "
             "('tensorflow_datasets', 'tensorflow')] + ['vedgan.data' in sys.modules]))")
  assert out == [True]


def test_tfds_entry_points_build_a_vedgan_builder_after_one_import(tmp_path):
  """``tfds.builder(...).download_and_prepare`` and ``tfds.data_source`` with TFDS's own
  ``DownloadConfig(manual_dir=...)``: the chitchat test corpus, 4/3/1 examples."""
  out = _run(f"""
import json
import vedgan.data
import tensorflow_datasets as tfds
builder = tfds.builder("chitchat", data_dir={str(tmp_path)!r}, file_format="array_record")
builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
    manual_dir={str(CHITCHAT_TESTDATA)!r}))
source = tfds.data_source("chitchat", split="validation", data_dir={str(tmp_path)!r})
print(json.dumps({{s: i.num_examples for s, i in builder.info.splits.items()}}
                 | {{"first": source[0]["response"].decode()}}))
""")
  assert {k: out[k] for k in ("train", "validation", "test")} == {
      "train": 4, "validation": 3, "test": 1}
  assert isinstance(out["first"], str) and out["first"]


def test_a_failing_registration_does_not_break_importing_tfds():
  out = _run("""
import json, logging
messages = []
class Keep(logging.Handler):
  def emit(self, record):
    messages.append(record.getMessage())
logging.getLogger("vedgan.data.registration").addHandler(Keep())
import vedgan.data
from vedgan.data import registration
def boom():
  raise RuntimeError("boom")
registration.register = boom
import tensorflow_datasets as tfds
print(json.dumps([tfds.core.__name__, messages]))
""")
  assert out == ["tensorflow_datasets.core", [
      "could not register vedgan's TFDS builders (RuntimeError: boom); "
      "call vedgan.data.registration.register()"]]


def test_registration_is_idempotent_and_uninstalls(monkeypatch):
  monkeypatch.setattr(registration, "_registered", False)
  added = []
  monkeypatch.setattr(tfds.core, "add_dataset_builder_provider",
                      lambda provider, index=None: added.append((provider, index)))
  assert registration.register() is True and registration.register() is False
  assert len(added) == 1 and added[0][1] == 0
  provider = added[0][0]
  assert provider.has_dataset("sst2") and not provider.has_dataset("mnist")
  assert provider.get_builder_cls("sst2").__name__ == "Sst2"
  # TFDS already imported: install registers (no hook), and a second install does nothing
  monkeypatch.setattr(registration, "_registered", False)
  registration.install()
  registration.install()
  assert len(added) == 2
  assert not any(getattr(f, "vedgan_tfds_hook", False) for f in sys.meta_path)


def test_shipped_names_are_not_in_tfds_catalogue():
  """Every TFDS catalogue module is imported one by one (TFDS's own lazy import stops at the
  first one whose optional dependency is missing); a module that cannot be imported here
  contributes its file names (TFDS names a builder's file after the dataset)."""
  out = _run("""
import importlib, json, os, pathlib, pkgutil
import tensorflow_datasets as tfds
names, failed = set(), []
modules = [i.name for i in pkgutil.iter_modules(tfds.__path__) if i.ispkg and i.name not in
           ("core", "testing", "scripts", "proto", "datasets")] + ["rlds/datasets"]
for module in modules:
  try:
    importlib.import_module("tensorflow_datasets." + module.replace("/", "."))
  except Exception:
    failed.append(module)
    root = pathlib.Path(os.fspath(tfds.core.tfds_path(module)))
    names |= {p.stem for p in root.rglob("*.py")} | {p.name for p in root.rglob("*") if p.is_dir()}
names |= set(tfds.list_builders(with_community_datasets=False))
print(json.dumps({"names": sorted(names), "failed": failed}))
""")
  catalogue = set(out["names"])
  assert {"mnist", "glue", "coco_captions", "opus", "squad"} <= catalogue   # it is the catalogue
  assert not catalogue & set(registration.SHIPPED), out["failed"]


def test_sources_builders_are_the_shipped_ones():
  assert {n: sources.BUILDERS[n] for n in registration.SHIPPED} == registration.SHIPPED
  for name in registration.SHIPPED:
    assert sources.builder_class(name) is tfds.builder_cls(name)


# -- data dir -------------------------------------------------------------------------------

@pytest.mark.parametrize("explicit,vedgan_env,tfds_env,expected", [
    ("x", "v", "t", "x"),
    (None, "v", "t", "v"),
    ("", "v", "t", "v"),
    (None, None, "t", "t"),
    (None, "", "t", "t"),           # an empty variable counts as unset
    (None, None, None, "~/.cache/vedgan/tfds"),
    (None, None, "", "~/.cache/vedgan/tfds"),
    (None, None, "gs://bucket/tfds", "gs://bucket/tfds"),
])
def test_data_dir_order(monkeypatch, tmp_path, explicit, vedgan_env, tfds_env, expected):
  monkeypatch.chdir(tmp_path)
  for var, value in (("VEDGAN_DATA_DIR", vedgan_env), ("TFDS_DATA_DIR", tfds_env)):
    if value is None:
      monkeypatch.delenv(var, raising=False)
    else:
      monkeypatch.setenv(var, value)
  want = expected if "://" in expected else os.path.abspath(os.path.expanduser(expected))
  assert sources.resolve_data_dir(explicit) == want


def test_tfds_data_dir_is_where_load_split_prepares(monkeypatch, tmp_path):
  monkeypatch.delenv("VEDGAN_DATA_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  records = sources.load_split({"name": "chitchat", "manual_dir": str(CHITCHAT_TESTDATA)},
                               "test")
  assert len(records) == 1
  assert (tmp_path / "tfds" / "chitchat" / "1.0.0" / "dataset_info.json").exists()
  monkeypatch.setenv("VEDGAN_DATA_DIR", str(tmp_path / "vedgan"))   # vedgan's wins
  assert sources.prepare_builder({"name": "chitchat", "manual_dir": str(CHITCHAT_TESTDATA)}
                                 ).data_dir.startswith(str(tmp_path / "vedgan"))


@pytest.mark.parametrize("name", sorted(registration.SHIPPED))
def test_constructing_and_preparing_leave_nothing_in_the_temp_folder(name, monkeypatch,
                                                                     tmp_path):
  """TFDS makes an empty ``tmp*tfds`` directory whenever it constructs a builder whose data
  is not prepared, and never removes it; vedgan's builders skip that step."""
  temp = tmp_path / "system_temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  sources.builder_class(name)(data_dir=str(tmp_path / "data"))
  if name == "chitchat":  # and a whole prepare, from the files the real one reads
    sources.prepare_builder({"name": "chitchat", "manual_dir": str(CHITCHAT_TESTDATA),
                             "data_dir": str(tmp_path / "data")})
  assert not os.listdir(temp)


# -- checksums.tsv --------------------------------------------------------------------------

def _urls(cls) -> dict:
  """``{url: filename}`` of every config of a shipped builder (None URLs left out)."""
  configs = getattr(cls, "BUILDER_CONFIGS", None) or [None]
  out = {}
  for config in configs:
    resources = cls.RESOURCES
    if isinstance(resources, property):
      builder = cls(data_dir="/nonexistent", config=config.name)
      resources = builder.RESOURCES
    for res in (resources or {}).values():
      if res.url is not None:
        out[res.url] = res.filename
  return out


def _parse(path: pathlib.Path) -> dict:
  """``{url: (size, sha256, filename)}``, checking TFDS's line format strictly."""
  text = path.read_text(encoding="utf-8")
  assert text.endswith("\n") and "\r" not in text
  entries = {}
  for line in text.splitlines():
    if line.startswith("#"):
      continue
    fields = line.split("\t")
    assert len(fields) == 4, line
    url, size, sha, filename = fields
    assert re.fullmatch(r"https?://\S+", url) and url not in entries
    assert re.fullmatch(r"[1-9][0-9]*", size) and re.fullmatch(r"[0-9a-f]{64}", sha)
    assert filename and "/" not in filename
    entries[url] = (int(size), sha, filename)
  return entries


@pytest.mark.parametrize("name", sorted(registration.SHIPPED))
def test_checksums_tsv_next_to_every_downloading_builder(name):
  cls = sources.builder_class(name)
  urls = _urls(cls) if hasattr(cls, "RESOURCES") else {}
  path = pathlib.Path(cls.code_path).parent / "checksums.tsv"
  if not urls or name in UNVERIFIED:
    assert not path.exists()          # nothing downloaded, or nothing published to pin
    assert bool(urls) == (name in UNVERIFIED)
    return
  entries = _parse(path)
  assert set(entries) == set(urls)
  assert {u: e[2] for u, e in entries.items()} == urls      # filenames as in RESOURCES
  # TFDS itself reads the file (the builder's public url_infos)
  infos = cls.url_infos
  assert {u: (int(i.size), i.checksum, i.filename) for u, i in infos.items()} == entries
  assert cls.checksums_path() == path


def test_sst2_checksum_is_tfds_own():
  """An independent copy of the value: TFDS's registry for its GLUE builder."""
  theirs = tfds.core.tfds_path("url_checksums") / "glue.txt"
  line = next(l for l in theirs.read_text().splitlines() if l.endswith("SST-2.zip"))
  url, size, sha, _ = line.split("\t")
  assert _parse(DATA / "sst2" / "checksums.tsv")[url] == (int(size), sha, "SST-2.zip")


# -- checksums enforced, with TFDS's real download code ---------------------------------------

_BUILDER_SOURCE = '''
import numpy as np
import tensorflow_datasets as tfds
from vedgan.data.builder_base import Resource, VedganBuilder, read_lines

class {cls}(VedganBuilder):
  VERSION = tfds.core.Version("1.0.0")
  RESOURCES = {{"data": Resource("{url}", "lines.txt")}}
  HOMEPAGE = "https://example.org"
  MANUAL_HELP = "lines.txt"
  SPLIT_NAMES = ("train",)

  def _info(self):
    return self.make_info(description="lines", features={{"text": tfds.features.Text()}},
                          citation="", license="")

  def _find(self, paths, dl_manager):
    return {{"train": paths["data"]}}

  def _generate_examples(self, split, path):
    for i, line in enumerate(read_lines(path)):
      yield i, {{"text": line}}
'''
PAYLOAD = b"first line\nsecond line\n"
HITS = []  # the paths the server was asked for


@pytest.fixture(scope="module")
def server():
  """A local HTTP server of ``/lines.txt`` (PAYLOAD); yields its URL."""
  class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
      HITS.append(self.path)
      self.send_response(200)
      self.send_header("Content-Length", str(len(PAYLOAD)))
      self.end_headers()
      self.wfile.write(PAYLOAD)

    def log_message(self, *args):
      """Requests are counted in HITS, not printed to stderr."""

  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()


@pytest.fixture
def tiny(server, tmp_path, monkeypatch):
  """A builder module written to ``tmp_path/<pkg>/`` (its checksums.tsv goes there),
  registered in ``sources.BUILDERS``; returns ``(name, folder, url)``. Each gets its own
  URL: TFDS keeps every checksum it has read in a process-wide table, by URL."""
  for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")
  tag = uuid.uuid4().hex[:8]
  cls, pkg = f"TinyLines{tag}", f"tiny_pkg_{tag}"
  folder = tmp_path / pkg
  folder.mkdir()
  (folder / "__init__.py").write_text("")
  url = f"{server}/{tag}/lines.txt"
  (folder / "builder.py").write_text(_BUILDER_SOURCE.format(cls=cls, url=url))
  monkeypatch.syspath_prepend(str(tmp_path))
  name = f"tiny_lines{tag}"
  monkeypatch.setitem(sources.BUILDERS, name, f"{pkg}.builder:{cls}")
  assert sources.builder_class(name).name == name
  return name, folder, url


def _config(name, tmp_path, **extra):
  return {"name": name, "data_dir": str(tmp_path / "data"), **extra}


def _tsv_line(url, payload, filename="lines.txt"):
  return f"{url}\t{len(payload)}\t{hashlib.sha256(payload).hexdigest()}\t{filename}\n"


def test_a_matching_download_builds_without_warning(tiny, tmp_path, caplog):
  name, folder, url = tiny
  (folder / "checksums.tsv").write_text(_tsv_line(url, PAYLOAD))
  with caplog.at_level(logging.WARNING):
    records = sources.load_split(_config(name, tmp_path), "train")
  assert [r["text"] for r in records] == [b"first line", b"second line"]
  assert "not verified" not in caplog.text


def test_a_mismatching_download_is_a_one_line_error(tiny, tmp_path):
  name, folder, url = tiny
  (folder / "checksums.tsv").write_text(_tsv_line(url, PAYLOAD + b"x"))
  with pytest.raises(DataError) as e:
    sources.load_split(_config(name, tmp_path), "train")
  message = str(e.value)
  assert "\n" not in message and "does not match the size/sha256" in message
  assert str(folder / "checksums.tsv") in message


def test_an_unregistered_url_warns_or_is_refused(tiny, tmp_path, caplog, capsys):
  name, folder, url = tiny
  assert sources.prepare_builder(_config(name, tmp_path / "a")).info.splits["train"
                                                                          ].num_examples == 2
  assert f"no size/sha256 registered for {url}" in caplog.text
  assert prepare.main([name, "--data_dir", str(tmp_path / "b"),
                       "--force_checksums_validation"]) == 1
  err = capsys.readouterr().err.strip().splitlines()[-1]     # (after TFDS's progress bars)
  assert err.startswith(f"{name}: downloading {url} failed (ValueError: Missing checksums url")
  assert not (folder / "checksums.tsv").exists()


def test_register_checksums_writes_tfds_format(tiny, tmp_path, capsys):
  name, folder, url = tiny
  assert prepare.main([name, "--data_dir", str(tmp_path / "d"), "--register_checksums"]) == 0
  assert (folder / "checksums.tsv").read_text() == _tsv_line(url, PAYLOAD)
  assert "train" in capsys.readouterr().out
  assert HITS.count("/" + url.split("/", 3)[3]) == 1          # a real download
  # registering again, the dataset prepared by then: rebuilt, the same file
  assert prepare.main([name, "--data_dir", str(tmp_path / "d"), "--register_checksums"]) == 0
  assert (folder / "checksums.tsv").read_text() == _tsv_line(url, PAYLOAD)
  with pytest.raises(ConfigError, match="leave data.manual_dir"):
    sources.prepare_builder(_config(name, tmp_path, manual_dir=str(folder)),
                            register_checksums=True)


def test_an_empty_manual_dir_is_a_one_line_error(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match=r"manual_dir=.*empty is empty; get sst2 from "
                     r"https://gluebenchmark.com/tasks and put SST-2.zip") as e:
    sources.prepare_builder({"name": "sst2", "data_dir": str(tmp_path / "d"),
                             "manual_dir": str(empty)})
  assert "\n" not in str(e.value)


def test_quiet_builds_switch_progress_bars_with_tfds_public_calls(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(tfds, "disable_progress_bar", lambda: calls.append("off"))
  monkeypatch.setattr(tfds, "enable_progress_bar", lambda: calls.append("on"))
  with sources._quiet_tfds(verbose=False):  # pylint: disable=protected-access
    calls.append("build")
    print("swallowed")
  with sources._quiet_tfds(verbose=True):  # pylint: disable=protected-access
    calls.append("verbose build")
  assert calls == ["off", "build", "on", "verbose build"]


# -- no private TFDS API ---------------------------------------------------------------------

def _vedgan_data_files():
  return sorted(p for p in DATA.rglob("*.py") if "__pycache__" not in p.parts)


@functools.lru_cache(maxsize=None)
def _tfds_protected_methods() -> frozenset:
  names = set()
  for klass in tfds.core.GeneratorBasedBuilder.__mro__:
    names |= {n for n in vars(klass)
              if n.startswith("_") and not n.startswith(("__", "_abc_"))}
  return frozenset(names)


def test_no_tfds_private_attribute_in_vedgan_data():
  """Textually (the reported uses) and by AST: no ``x._name`` on a download manager or a TFDS
  module, no ``getattr(x, "_name")``, no import of a private TFDS name."""
  assert "_download_and_prepare" in _tfds_protected_methods()      # the check can see them
  offences = []
  for path in _vedgan_data_files():
    text = path.read_text(encoding="utf-8")
    for pattern in ("._manual_dir", "tqdm_utils", "._active", "_download_and_prepare"):
      if pattern in text:
        offences.append(f"{path.name}: {pattern}")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not (
          node.attr.startswith("__")):
        root = node.value
        while isinstance(root, ast.Attribute):
          root = root.value
        if isinstance(root, ast.Name) and root.id in ("tfds", "dl_manager",
                                                      "tensorflow_datasets"):
          offences.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
      if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr"
          and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
          and str(node.args[1].value).startswith("_")
          and node.args[1].value in _tfds_protected_methods() | {"_manual_dir", "_active"}):
        offences.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
          "tensorflow_datasets"):
        offences += [f"{path.name}:{node.lineno} {a.name}" for a in node.names
                     if a.name.startswith("_")]
  assert not offences


@pytest.mark.parametrize("name", sorted(registration.SHIPPED))
def test_builders_override_only_tfds_builder_hooks(name):
  overridden = set()
  for klass in sources.builder_class(name).__mro__:
    if klass.__module__.startswith("vedgan."):
      overridden |= set(vars(klass)) & _tfds_protected_methods()
  assert overridden <= BUILDER_HOOKS, overridden - BUILDER_HOOKS
