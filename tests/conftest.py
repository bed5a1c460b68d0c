"""Shared test setup: one prepared copy of the embedded corpus per test session."""
import atexit
import os
import shutil
import tempfile

import pytest

# Prepared TFDS data (and the compilation cache below) are shared by every test, xdist
# worker and subprocess of this session: the process that starts the session creates the
# folder (the others inherit the variable) and removes it when it exits.
if "VEDGAN_DATA_DIR" not in os.environ:
  os.environ["VEDGAN_DATA_DIR"] = tempfile.mkdtemp(prefix="vedgan-tfds-")
  atexit.register(shutil.rmtree, os.environ["VEDGAN_DATA_DIR"], ignore_errors=True)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's cost is XLA compiling many tiny models, not running them: cheaper CPU code
# generation halves it (it skips LLVM optimisation; values agree to float32 round-off, not
# bit for bit: -O0 initialises other last bits than -O3, tests/test_init_compile.py). The long
# in-process training runs (marked ``optimised``) are the exception: their fully optimised
# programs run fast enough to pay for the longer compilation, so ``pytest_runtest_setup``
# switches per test. Set before JAX starts; subprocesses inherit the environment variable.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
#: "marked": tests marked ``optimised`` compile fully optimised programs; "none": every test
#: compiles cheaply (to compare the two).
OPTIMISE = os.environ.setdefault("VEDGAN_TEST_OPTIMISE", "marked")
# Cheap compilation also uses XLA:CPU's older loop-fusion code generator: it compiles the
# suite's tiny scan-heavy step functions 2-3x faster and runs them about as fast (measured on
# MojiTalk's and HappyBot's demo steps). With full optimisation it is the other way round, so
# it follows the per-test choice: a compile option in this process (``_cheap_codegen``), an
# XLA flag for the subprocesses a test starts. Tests marked ``default_codegen`` (they compare
# two differently compiled programs at float32 round-off) keep the default generator. "0"
# turns it off.
CHEAP_CODEGEN = os.environ.setdefault("VEDGAN_TEST_CHEAP_CODEGEN", "1") == "1"
CHEAP_CODEGEN_FLAG = "--xla_cpu_use_fusion_emitters=false"
# XLA:CPU cuts each program's LLVM module into parts that it compiles on separate threads.
# The suite's programs are small and its xdist workers already keep every core busy, so the
# cutting only adds work: compiling each program as one part took 10-11% off the wall time
# of compile-heavy modules, 13-16% off their compile time (CONTRIBUTING.md). It applies to
# every test, optimised or not, and to their subprocesses (an XLA flag, read when JAX starts);
# ``VEDGAN_TEST_SINGLE_PART_CODEGEN=0`` keeps XLA's default.
SINGLE_PART_FLAG = "--xla_cpu_parallel_codegen_split_count=1"
if (os.environ.setdefault("VEDGAN_TEST_SINGLE_PART_CODEGEN", "1") == "1"
    and "xla_cpu_parallel_codegen_split_count" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SINGLE_PART_FLAG).strip()
_BASE_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")

# Many tests build identical tiny models: one on-disk XLA cache per test session (empty at
# the start, shared by the xdist workers and every subprocess) compiles each program once.
# The cache is keyed by the program, the XLA flags and the devices, so a hit is the same
# executable the test would have compiled.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ["VEDGAN_DATA_DIR"], "jax-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The host allocator as every run sets it (vedgan/host_malloc.py), from the start of each test
# process rather than from its first Trainer, so that no test's allocator depends on the order
# the tests ran in; the test processes' memory then stays at its peak until they exit.
from vedgan import host_malloc  # pylint: disable=wrong-import-position

host_malloc.configure(None)


def tiny_overrides() -> dict:
  """Overrides that make the seq2seq demo config train in seconds."""
  return {
      "tokenizer.vocab_size": 300,
      "model.embed_dim": 24,
      "model.hidden": 32,
      "model.dropout": 0.0,
      "train.batch_size": 8,
      "train.eval_batch_size": 16,
      "train.eval_batches": 2,
      "train.eval_every": 1000,
      "train.checkpoint_every": 1000,
      "train.log_every": 2,
      "train.num_samples": 2,
      "train.progress": False,
      "train.eval_plots": False,
      "train.curve_plots": False,
      "data.max_context_len": 16,
      "data.max_response_len": 12,
      "data.buckets": (8, 16),
  }


def make_config(path: str = "configs/seq2seq.py", variant: str = "demo", **overrides):
  """Loads a config file like the CLI does and applies dotted overrides."""
  import importlib.util  # pylint: disable=import-outside-toplevel

  spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3],
                                                os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  values = tiny_overrides() if path.endswith("seq2seq.py") else {}
  values.setdefault("train.eval_plots", False)  # stage-end model plots: tests/test_plots.py
  # Stage-end curves (matplotlib: ~10% of the suite's CPU when every test run drew them):
  # on only in the tests that look at them (test_plots, test_train, test_cycle_rows).
  values.setdefault("train.curve_plots", False)
  values.update({k.replace("__", "."): v for k, v in overrides.items()})
  for dotted, value in values.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config


#: Modules whose tests are spread over the xdist workers one by one: long, independent
#: subprocess runs, where spreading balances the workers. Every other module is one unit of
#: work, so its module-scoped fixtures (trained runs, compiled models) are built once, on one
#: worker, instead of once per worker that happens to get one of its tests.
SPREAD_MODULES = ("tests/test_notebooks.py", "tests/test_kill_resume.py",
                  "tests/test_mixed_precision.py")


def pytest_configure(config):
  """``VEDGAN_TEST_COMPILE_REPORT=FILE``: one line per test with its JAX tracing and compile
  time (``tests/compile_report.py``, which also summarises the file)."""
  path = os.environ.get("VEDGAN_TEST_COMPILE_REPORT")
  if path:
    import compile_report  # pylint: disable=import-outside-toplevel
    config.pluginmanager.register(compile_report.Recorder(os.path.abspath(path)),
                                  "vedgan-compile-report")


@pytest.hookimpl(optionalhook=True)   # no error under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
  """With ``-n N``: each module is one unit of work (as xdist's ``loadscope``), except the
  tests of ``SPREAD_MODULES``, which are units of their own. Units are handed out in
  collection order (the ``slow`` tests first, see below), not xdist's largest-first."""
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

  class ModulesTogether(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      module = nodeid.split("::", 1)[0]
      return nodeid if module in SPREAD_MODULES else module

  config.option.loadscopereorder = False
  return ModulesTogether(config, log)


def pytest_collection_modifyitems(config, items):
  """Runs the ``slow`` tests first (a stable sort): with ``-n 2`` the long runs start while
  the many short tests fill the gaps, instead of one worker finishing a long run alone."""
  del config
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Chooses this test's XLA optimisation before any of its fixtures run: cheap compilation,
  or full optimisation for the tests marked ``optimised`` (in this process and in the
  subprocesses it starts). The setting is part of the compilation-cache key."""
  import jax  # pylint: disable=import-outside-toplevel

  cheap = OPTIMISE == "none" or item.get_closest_marker("optimised") is None
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if cheap else "0"
  jax.config.update("jax_disable_most_optimizations", cheap)
  if CHEAP_CODEGEN:
    _cheap_codegen()
    codegen = cheap and item.get_closest_marker("default_codegen") is None
    _CODEGEN["cheap"] = codegen
    jax.devices()  # this process read XLA_FLAGS at start-up: the change is for subprocesses
    flags = (_BASE_XLA_FLAGS + " " + CHEAP_CODEGEN_FLAG) if codegen else _BASE_XLA_FLAGS
    os.environ["XLA_FLAGS"] = flags.strip()


#: Whether the running test compiles with ``CHEAP_CODEGEN_FLAG`` (set per test above).
_CODEGEN = {"cheap": False}


def _cheap_codegen():
  """Adds ``CHEAP_CODEGEN_FLAG`` to the compile options of every program this process
  compiles for a test that uses it (installed once; the options are part of the
  compilation-cache key). JAX has no public switch for a per-compile XLA option; where
  its private hook is missing the tests just compile with the default generator."""
  try:
    from jax._src import compiler  # pylint: disable=import-outside-toplevel
    original = compiler.get_compile_options
  except (ImportError, AttributeError):
    return
  if getattr(original, "vedgan_cheap_codegen", False):
    return
  name = CHEAP_CODEGEN_FLAG[2:].split("=")[0]

  def get_compile_options(*args, **kwargs):
    options = original(*args, **kwargs)
    if _CODEGEN["cheap"] and hasattr(options, "env_option_overrides"):
      options.env_option_overrides = list(options.env_option_overrides) + [(name, False)]
    return options

  get_compile_options.vedgan_cheap_codegen = True
  compiler.get_compile_options = get_compile_options


@pytest.fixture(autouse=True)
def _absl_verbosity_restored():
  """The CLIs set absl's process-wide verbosity (``vedgan.sample`` to ERROR: no data-count
  warnings before a reply); tests call them in-process, so each test gets back the
  verbosity it started with, and a later test in the same worker still sees warnings."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  verbosity = absl_logging.get_verbosity()
  yield
  absl_logging.set_verbosity(verbosity)


@pytest.fixture(autouse=True, scope="module")
def _absl_verbosity_restored_per_module():
  """The same around each module: a module-scoped fixture (``tests/test_export.py`` exports
  through the CLI) is set up before the function-scoped restorer above takes its copy."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  verbosity = absl_logging.get_verbosity()
  yield
  absl_logging.set_verbosity(verbosity)


@pytest.fixture
def tiny_config():
  return make_config


def restore_numpy_state(workdir):
  """``(step, state as a tree of numpy arrays)`` of a workdir's latest checkpoint.

  Reads without a template and without device placement, so a checkpoint written
  on 8 devices can be compared with one written on 1.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  root = os.path.join(str(workdir), "checkpoints")
  step = max(int(s) for s in os.listdir(root) if s.isdigit())
  path = os.path.join(root, str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path)
    # orbax >= 0.12: StepMetadata; 0.11: the TreeMetadata itself
    tree = (meta.item_metadata.tree if hasattr(meta, "item_metadata")
            else getattr(meta, "tree", meta))
    restore_args = jax_tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return step, state


def jax_tree_map(fn, tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.map(fn, tree, is_leaf=lambda x: not isinstance(x, (dict, list, tuple)))
