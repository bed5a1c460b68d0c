r"""Writes the Colab notebooks of this folder (outputs cleared) from the cell texts below.

  python colab/build_notebooks.py          # rewrites colab/*.ipynb
  python colab/build_notebooks.py --check  # exit 1 if a notebook differs from this script

Every notebook has the same skeleton: title and "Open in Colab" badge, an
install cell (skipped when vedgan is importable), a device cell, a config cell
with the fields a user changes, training through ``vedgan.train.run`` (the
library's progress bar), sampling and the paper's evaluation with its plot
inline. Cells carry a tag naming their role (``install``, ``devices``,
``config``, ``train``, ``sample``, ``evaluate``), which
``tests/test_notebooks.py`` checks. ``VEDGAN_SMOKE=1`` makes the config cell
pick the ``demo`` variant shrunk to a few steps (:mod:`vedgan.notebook`).
"""
from __future__ import annotations

import argparse
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
#: The one place that names where vedgan is published: the install cell of every notebook
#: and its "Open in Colab" badge. Change it here (and rebuild) for a fork.
REPO = "vedgan/vedgan"
REPO_URL = f"https://github.com/{REPO}"
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         f"(https://colab.research.google.com/github/{REPO}/blob/main/colab/{{name}}.ipynb)")

INSTALL = f"""\
# Where pip installs vedgan from. Set it to your copy if this notebook did not come from
# {REPO_URL}: a fork ("git+https://github.com/YOU/vedgan"), a wheel or source folder on
# a mounted Drive ("/content/drive/MyDrive/vedgan"), or a release ("vedgan").
VEDGAN_SOURCE = "git+{REPO_URL}"

# Skipped when vedgan is already importable (a local checkout, CI, or a second run of this
# cell). Colab's TPU and GPU runtimes come with a matching JAX.
import importlib, importlib.util, subprocess, sys
if importlib.util.find_spec("vedgan") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", VEDGAN_SOURCE], check=True)
  importlib.invalidate_caches()
import vedgan
print("vedgan", vedgan.__version__ if hasattr(vedgan, "__version__") else "", vedgan.__file__)"""

DEVICES = """\
# The devices JAX sees: TPU cores (Runtime > Change runtime type > TPU), a GPU, or the CPU.
# The global batch is split over all of them, so train.batch_size must divide evenly.
from vedgan import notebook
devices = notebook.show_devices()"""

DEVICES_MD = """\
## Accelerator

Pick a TPU or GPU runtime (*Runtime → Change runtime type*) for the paper-size
run; the `demo` variant also trains on a CPU. The cell below lists what JAX
sees with plain `jax.devices()`; every step is data-parallel over all of them
(`jax.shard_map` over a 1-D `"data"` mesh)."""

TRAIN_MD = """\
## Train

`vedgan.train.run(config, workdir)` is exactly what
`python -m vedgan.main --config ... --workdir ...` runs: every stage of
`config.stage_order`, evaluation and samples at `train.eval_every`,
checkpoints, a progress bar. Rerunning the cell (or the command) resumes from
the latest checkpoint in the workdir, so a Colab disconnect costs at most
`train.checkpoint_every` steps if the workdir is on a mounted Drive."""


def md(text: str, tag: str | None = None):
  cell = nbformat.v4.new_markdown_cell(text)
  if tag:
    cell.metadata["tags"] = [tag]
  return cell


def code(text: str, tag: str | None = None):
  cell = nbformat.v4.new_code_cell(text)
  if tag:
    cell.metadata["tags"] = [tag]
  return cell


def train_cell():
  """The training cell most notebooks share: what ``python -m vedgan.main`` runs, then the curves."""
  return code("""\
result = train.run(config, WORKDIR)
print(result)
notebook.show_image(f"{WORKDIR}/plots/training_curves.png")""", "train")


def notebook(name: str, title: str, intro: str, cells: list) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
      "language_info": {"name": "python"},
      "accelerator": "TPU",
      "colab": {"name": f"{name}.ipynb", "provenance": [], "toc_visible": True},
  }
  nb.cells = [md(f"# {title}\n\n{BADGE.format(name=name)}\n\n{intro}", "badge"),
              code(INSTALL, "install"), md(DEVICES_MD), code(DEVICES, "devices"), *cells]
  for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives the same file
    cell.id = f"{name}-{i:02d}"
  return nb


# -----------------------------------------------------------------------------------------
# quickstart: seq2seq with attention
# -----------------------------------------------------------------------------------------

QUICKSTART = notebook(
    "quickstart", "vedgan quick start: a seq2seq dialogue model on TPU/GPU",
    """\
vedgan reimplements five papers on latent-variable, adversarial and
reinforcement-learned dialogue generation in JAX/Flax. This notebook trains the
baseline every paper starts from, a seq2seq model with a bidirectional GRU
encoder and Luong attention, through the same driver as the command line,
samples responses from it and evaluates it (perplexity, BLEU, distinct-n and a
quality–diversity curve over sampling temperatures).

The paper notebooks: `mojitalk.ipynb`, `happybot.ipynb`,
`collaborative_ved.ipynb`, `latent_gan.ipynb`, `topk_gan.ipynb`.""",
    [
        md("""\
## Config

`configs/seq2seq.py` has two variants: `demo` (the embedded `chatterbot-corpus`
dialogues, a small model, ~1 minute on a CPU; this notebook's default) and
`default` (hidden and embedding 512, 50k steps: a TPU or GPU run on a larger
corpus, not on the demo dialogues). Any field can be overridden; `None` keeps the
variant's value, a misspelt field is an error. The workdir holds checkpoints,
`metrics.jsonl`, samples, TensorBoard logs and plots."""),
        code("""\
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
VARIANT = "demo"                           # "demo": small and fast | "default": full size
WORKDIR = notebook.run_dir(f"quickstart-{VARIANT}")
config = notebook.load_config("seq2seq", VARIANT, {
    "train.batch_size": None,          # global batch over all devices (default 128, demo 32)
    "stages.mle.num_steps": None,      # training steps (default 50k, demo 500)
    "stages.mle.learning_rate": None,  # Adam (default 1e-3, demo 2e-3)
    "model.hidden": None,              # GRU units (default 512, demo 96)
    "model.attention": "general",      # Luong score: dot | general | scaled_dot
    "train.eval_every": None,          # validation perplexity + samples every N steps
    "decode.mode": "greedy",           # samples during training: greedy | sample | beam
})
print(train.dry_run(config, WORKDIR))""", "config"),
        md(TRAIN_MD),
        train_cell(),
        md("""\
## Sample

The run is reopened read-only from its latest checkpoint
(`notebook.open_run`); `objective.prompt_batch` encodes the contexts and
`objective.generate` decodes them greedily, by sampling (temperature, top-k) or
by beam search, as `DecodeOptions` say."""),
        code("""\
import jax

CONTEXTS = ["hi, how are you?", "what is your favourite book?", "do you like music?",
            "tell me a joke"]
with notebook.open_run(WORKDIR) as run:
  batch = run.objective.prompt_batch(run.inputs, CONTEXTS)
  for mode in ("greedy", "sample", "beam"):
    options = run.objective.decode_options(mode=mode, temperature=0.7, beam_width=4)
    out = run.objective.generate(run.state, batch, jax.random.key(0), options)
    print(f"--- {mode}")
    for context, response in zip(CONTEXTS, run.objective.texts(out)):
      print(f"{context!r} -> {response!r}")""", "sample"),
        md("""\
## Evaluate

`vedgan.eval_suites.run_suites` is `python -m vedgan.evaluate`: perplexity on
the whole validation split, corpus and Texygen BLEU, distinct-n and Self-BLEU
of greedy responses, and the quality–diversity sweep (negative BLEU against
Self-BLEU over sampling temperatures). Each suite writes
`WORKDIR/eval/<suite>.json` with the settings that make its numbers comparable."""),
        code("""\
from vedgan import eval_suites

NUM_SAMPLES = 16 if SMOKE else 0           # contexts decoded; 0 = the whole split
TEMPERATURES = (0.0, 1.0) if SMOKE else (0.0, 0.25, 0.5, 0.75, 1.0)   # 0 = greedy
results = eval_suites.run_suites(WORKDIR, ["likelihood", "bleu", "diversity", "sweep"],
                                 num_samples=NUM_SAMPLES, temperatures=TEMPERATURES)
rows = [{"suite": name, **{k: v for k, v in r["values"].items() if "@" not in k}}
        for name, r in results.items() if name != "sweep"]
for row in rows:
  print(row)
notebook.show_image(f"{WORKDIR}/eval/quality_diversity.png")""", "evaluate"),
        md("""\
## From the command line

```bash
python -m vedgan.main --config configs/seq2seq.py:default --workdir runs/s2s \\
    --config.train.batch_size=256
python -m vedgan.evaluate --workdir runs/s2s --suite likelihood,bleu,diversity,sweep
```"""),
    ])

# -----------------------------------------------------------------------------------------
# MojiTalk
# -----------------------------------------------------------------------------------------

MOJITALK = notebook(
    "mojitalk", "MojiTalk: emoji-conditioned CVAE and Reinforced CVAE (Zhou & Wang, ACL 2018)",
    """\
One run trains the paper's four stages in order: the base seq2seq conditioned
on an emoji, the CVAE with the bag-of-words loss (supplement Eq. 1–2, KL
annealed to 0.5), the DeepMoji emoji classifier, and the Reinforced CVAE
(`L'' = L' − λ J'`, Algorithm 1 with the rank weights of Eq. 3). The
evaluation compares base / CVAE / Reinforced CVAE like the paper's table
(perplexity, BLEU, emoji accuracy of the generated responses) and draws the
classifier's per-emoji accuracy (Fig. 1). See `docs/mojitalk.md`.""",
    [
        md("""\
## Config

`paper` is the full setting on the MojiTalk Twitter data, which the authors
release as `mojitalk_data.zip` (linked from github.com/claude-zhou/MojiTalk);
it cannot be downloaded automatically: put the zip (or its extracted folder) in
`MANUAL_DIR`, e.g. on a mounted Drive. `demo` runs on the embedded corpus with
8 stand-in sentiment classes instead of emoji (see `docs/mojitalk.md`).
`paper_base` / `paper_cvae` / `paper_tanh_kl` are the other variants. The
stage lengths of `paper` are 10 / 8 / 5 / 6 epochs of ~4.7k steps."""),
        code("""\
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
VARIANT = "demo" if SMOKE else "paper"     # paper | paper_base | paper_cvae | paper_tanh_kl | demo
MANUAL_DIR = "/content/drive/MyDrive/mojitalk"   # holds mojitalk_data.zip (paper variants)
if not VARIANT.startswith("demo") and notebook.in_colab():
  from google.colab import drive           # the paper data live on your Drive: mount it
  drive.mount("/content/drive")
WORKDIR = notebook.run_dir(f"mojitalk-{VARIANT}")
config = notebook.load_config("mojitalk", VARIANT, {
    "data.manual_dir": None if VARIANT.startswith("demo") else MANUAL_DIR,
    "train.batch_size": None,              # global batch (paper 128, demo 32)
    "stages.base.num_steps": None,         # steps per stage (paper: 10/8/5/6 epochs)
    "stages.cvae.num_steps": None,
    "stages.classifier.num_steps": None,
    "stages.rl.num_steps": None,
    "stages.cvae.kl_ceiling": 0.5,         # KL weight reached at the end of annealing
    "stages.cvae.kl_anneal_epochs": None,  # annealing length (paper: 6 epochs)
    "stages.cvae.bow_weight": 1.0,         # bag-of-words loss weight
    "stages.rl.policy_weight": 1.0,        # lambda of L'' = L' - lambda J'
    "model.latent_dim": None,              # latent size (paper 268, demo 32)
    "decode.latent_samples": None,         # prior samples per response, the classifier picks one
})
print(train.dry_run(config, WORKDIR))""", "config"),
        md(TRAIN_MD),
        train_cell(),
        md("""\
## Sample

The same context answered for every label (emoji in `paper`, the stand-in
classes in `demo`): the Reinforced CVAE draws `decode.latent_samples` latent
codes from the prior, decodes each greedily and keeps the response the
classifier rates most likely for the designated label."""),
        code("""\
import jax
import numpy as np

CONTEXT = "i finally finished my exams today"
with notebook.open_run(WORKDIR) as run:
  obj = run.objective
  names = obj.label_names()
  labels = np.arange(min(len(names), 8), dtype=np.int32)
  batch = obj.prompt_batch(run.inputs, [CONTEXT] * len(labels), label=labels)
  out = obj.generate(run.state, batch, jax.random.key(0), obj.decode_options())
  for label, response, p in zip(labels, obj.texts(out), np.asarray(out.info["label_prob"])):
    print(f"[{names[label]}] {response!r}  (classifier p(label) = {p:.2f})")""",
             "sample"),
        md("""\
## Evaluate: base vs CVAE vs Reinforced CVAE

The evaluation suite `mojitalk_table2` restores the checkpoint at the end of
each generator stage, scores each model with the final classifier and writes
`eval/mojitalk_table2.json`; `mojitalk_classifier` draws the classifier's
per-label accuracy (the paper's Fig. 1). Use `SPLIT = "test"` for the paper's
table."""),
        code("""\
import os
from vedgan import eval_suites

SPLIT = "validation" if VARIANT.startswith("demo") else "test"
NUM_EXAMPLES = 16 if SMOKE else 0                         # 0 = the whole split
out = eval_suites.run_suites(WORKDIR, "mojitalk_table2,mojitalk_classifier", echo=None,
                             split=SPLIT, num_samples=NUM_EXAMPLES)
notebook.show_markdown(out["mojitalk_table2"]["table"])
notebook.show_image(os.path.join(WORKDIR, out["mojitalk_classifier"]["plots"][0]))""",
             "evaluate"),
        md("""\
## From the command line

```bash
python -m vedgan.main --config configs/mojitalk.py:paper --workdir runs/mojitalk \\
    --config.data.manual_dir=/path/to/folder_with_mojitalk_data
python -m vedgan.evaluate --workdir runs/mojitalk --split test \\
    --suite mojitalk_table2,mojitalk_classifier
```"""),
    ])

# -----------------------------------------------------------------------------------------
# HappyBot
# -----------------------------------------------------------------------------------------

HAPPYBOT = notebook(
    "happybot", "HappyBot: look-ahead sentiment rewards with REINFORCE (Shin et al.)",
    """\
HappyBot fine-tunes a seq2seq dialogue model with REINFORCE so that the
*user's next turn* is predicted to be positive: a sentiment classifier labels
utterances, a look-ahead predictor learns the sentiment of the next turn, and
the RL stage mixes `L_RL` (with a learned per-timestep baseline, Eq. 7–9) and
`L_MLE` (Eq. 10). This notebook trains the Seq2Seq row of Table 2, continues a
copy of it into RL Look-ahead (the rows share everything up to the end of MLE)
and compares their automatic metrics (BLEU, distinct-n, predicted sentiment).
See `docs/happybot.md`.""",
    [
        md("""\
## Config

`paper` reads DailyDialog, PersonaChat and EmpatheticDialogues (dialogues) and
SST-2 + EmpatheticDialogues situations (the classifier); the TFDS builders
download them on a connected machine (see `docs/data.md`). `demo` uses the
embedded corpus with VADER-lexicon sentiment labels. `SETTING_mle` is the
Seq2Seq row, `SETTING` RL Look-ahead, `SETTING_current` RL Current and
`SETTING_multiseq` MultiSeq."""),
        code("""\
import os, shutil
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
SETTING = "demo" if SMOKE else "paper"     # paper | demo
RL_VARIANT = SETTING                       # RL Look-ahead; f"{SETTING}_current" = RL Current
MLE_WORKDIR = notebook.run_dir(f"happybot-{SETTING}-seq2seq")
RL_WORKDIR = notebook.run_dir(f"happybot-{RL_VARIANT}-rl")
knobs = {
    "train.batch_size": None,              # global batch (32 in the paper's code)
    "stages.mle.num_steps": None,          # Seq2Seq pre-training (paper 60k, demo 500)
    "stages.rl.num_steps": None,           # RL fine-tuning (paper 20k, demo 250)
    "stages.rl.mixed_weight": 0.25,        # lambda of Eq. 10 (weight of L_RL)
    "stages.rl.temperature": 0.4,          # tau of Eq. 5 (sampling and log P)
    "stages.rl.baseline": "learned",       # learned (Eq. 7-8) | none
}
mle_config = notebook.load_config("happybot", f"{SETTING}_mle", knobs)
rl_config = notebook.load_config("happybot", RL_VARIANT, knobs)
print(train.dry_run(rl_config, RL_WORKDIR))""", "config"),
        md(TRAIN_MD + """

First the Seq2Seq model (classifier, predictor, MLE), then a copy of its
workdir continues into the RL stage."""),
        code("""\
print(train.run(mle_config, MLE_WORKDIR))
if not os.path.exists(RL_WORKDIR):
  shutil.copytree(MLE_WORKDIR, RL_WORKDIR)
print(train.run(rl_config, RL_WORKDIR))
notebook.show_image(f"{RL_WORKDIR}/plots/training_curves.png")""", "train"),
        md("""\
## Sample

Greedy responses of both models to the same two-turn contexts (`<eou>`
separates turns)."""),
        code("""\
import jax

CONTEXTS = ["i lost my keys again <eou> oh no, where did you see them last?",
            "how was your weekend?", "i am so tired of work"]
for name, workdir in (("Seq2Seq", MLE_WORKDIR), ("RL Look-ahead", RL_WORKDIR)):
  with notebook.open_run(workdir) as run:
    batch = run.objective.prompt_batch(run.inputs, CONTEXTS)
    out = run.objective.generate(run.state, batch, jax.random.key(0),
                                 run.objective.decode_options(mode="greedy"))
    print(f"--- {name}")
    for context, response in zip(CONTEXTS, run.objective.texts(out)):
      print(f"{context!r} -> {response!r}")""", "sample"),
        md("""\
## Evaluate: Table 2's automatic columns

The evaluation suite `happybot_table2` (`python -m vedgan.evaluate --suite
happybot_table2`) decodes the validation contexts greedily and reports corpus
BLEU-4, distinct-1/2 and the mean predicted look-ahead sentiment (how positive
the user's next turn is predicted to be) and current sentiment of the
responses; it writes `eval/happybot_table2.json` into each workdir. RL
Look-ahead should raise the look-ahead score over Seq2Seq."""),
        code("""\
from vedgan import eval_suites

rows = []
for name, workdir in (("Seq2Seq", MLE_WORKDIR), ("RL Look-ahead", RL_WORKDIR)):
  record = eval_suites.run_suites(workdir, "happybot_table2", echo=None)["happybot_table2"]
  rows.append({"model": name, "step": record["step"], **record["values"]})
columns = ["model", "step", "bleu", "distinct_1", "distinct_2", "reward_lookahead",
           "reward_current", "length"]
notebook.show_markdown(notebook.markdown_table(rows, columns))
chart = notebook.bar_chart({r["model"]: r for r in rows}, ["reward_lookahead", "reward_current"],
                           f"{RL_WORKDIR}/plots/table2_sentiment.png",
                           title="mean predicted sentiment of greedy responses (validation)")""",
             "evaluate"),
        md("""\
## From the command line

```bash
S=paper
python -m vedgan.main --config configs/happybot.py:${S}_mle --workdir runs/$S/seq2seq
cp -r runs/$S/seq2seq runs/$S/lookahead
python -m vedgan.main --config configs/happybot.py:$S --workdir runs/$S/lookahead
python -m vedgan.evaluate --workdir runs/$S/lookahead --suite happybot_table2,happybot_variance
```"""),
    ])

# -----------------------------------------------------------------------------------------
# Collaborative VED
# -----------------------------------------------------------------------------------------

COLLABORATIVE_VED = notebook(
    "collaborative_ved", "Collaborative VED: two-phase AE/CVAE training (Shen et al., AAAI 2018)",
    """\
Every row of the paper's Table 1 is a variant of one objective: HRED, VHRED
with KL annealing, word drop-out, bag-of-words loss or free bits, and the
collaborative VED, whose AE phase (Eq. 9, `max(α, KL) − log p(x|z,c)`) and
CVAE phase (Eq. 8) alternate epoch-wise, with scheduled sampling between the
AE code and the CVAE's `g(ε)` (Eq. 7). The evaluation gives Table 1 (PPL, KL,
NLL bound), Table 2 (embedding Average / Greedy / Extrema of beam-search
responses) and Fig. 3 (prior vs posterior latent samples of one context).
See `docs/collaborative_ved.md`.""",
    [
        md("""\
## Config

`ROW` picks the Table 1 row; `paper` settings train on DailyDialog (the TFDS
builder downloads it on a connected machine, `docs/data.md`), `demo` on the
embedded corpus with a small model."""),
        code("""\
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
ROW = "co_ss"   # hred kla kla_do kla_bow fb fb_all co co_do co_ss co_ss_joint
DEMO = SMOKE    # True: the embedded corpus and a small model
VARIANT = f"{ROW},demo" if DEMO else ROW
WORKDIR = notebook.run_dir(f"cved-{VARIANT.replace(',', '-')}")
stage = "co" if ROW in ("co", "co_do", "co_ss") else "train"
config = notebook.load_config("collaborative_ved", VARIANT, {
    "train.batch_size": None,              # global batch (paper 128)
    f"stages.{stage}.num_steps": None,     # paper 60k, demo 594
    f"stages.{stage}.learning_rate": None, # paper 2e-4
    "ved.alpha": 5.0,                      # CO: the KL floor alpha of Eq. 9
    "ved.ss_k": None,                      # scheduled sampling k of Eq. 7 (paper 2500)
    "ved.steps_per_epoch": None,           # AE / CVAE phase length (one epoch)
    "model.latent_dim": None,              # paper 512
    "decode.beam_width": None,             # test protocol: beam 5, <unk> blocked
})
print(train.dry_run(config, WORKDIR))""", "config"),
        md(TRAIN_MD),
        train_cell(),
        md("""\
## Sample

Responses to multi-turn contexts (turns separated by `<eou>`), decoded by beam
search from `z = g(ε)`, `ε ~ p(ε|c)` (the test-time path of the collaborative
VED)."""),
        code("""\
import jax

CONTEXTS = ["hello <eou> hi, how are you?", "what do you do for fun?",
            "do you like robots? <eou> yes, i am one"]
with notebook.open_run(WORKDIR) as run:
  batch = run.objective.prompt_batch(run.inputs, CONTEXTS)   # each turn encoded on its own
  out = run.objective.generate(run.state, batch, jax.random.key(0),
                               run.objective.decode_options())   # config.decode
  for context, response in zip(CONTEXTS, run.objective.texts(out)):
    print(f"{context!r} -> {response!r}")""", "sample"),
        md("""\
## Evaluate: Table 1, Table 2 and Fig. 3

`vedgan.eval_suites.run_suites` is `python -m vedgan.evaluate`; the paper's
suites write `eval/<suite>.json` and `eval/latent_projection.png`. Pass
`word_vectors=` a word2vec file (as the paper) for the embedding metrics on
words; by default the model's own embeddings score token ids."""),
        code("""\
from vedgan import eval_suites

NUM_CONTEXTS = 16 if SMOKE else 0          # Table 2 / Fig. 3 contexts; 0 = the whole split
SUITES = ["collaborative_ved_table1", "collaborative_ved_table2", "collaborative_ved_fig3"]
res = eval_suites.run_suites(WORKDIR, SUITES, num_samples=NUM_CONTEXTS)
t1, t2 = res[SUITES[0]]["values"], res[SUITES[1]]["values"]
notebook.show_markdown(
    notebook.markdown_table([{"row": ROW, **t1}], ["row", "perplexity", "kl", "nll_bound"])
    + "\\n\\n" + notebook.markdown_table([{"row": ROW, **t2}],
                                         ["row", "average", "greedy", "extrema"]))
for path in res[SUITES[2]]["plots"]:
  notebook.show_image(f"{WORKDIR}/{path}")""", "evaluate"),
        md("""\
## From the command line

```bash
python -m vedgan.main --config configs/collaborative_ved.py:co_ss --workdir runs/cved_co_ss
python -m vedgan.evaluate --workdir runs/cved_co_ss \\
    --suite collaborative_ved_table1,collaborative_ved_table2,collaborative_ved_fig3
```"""),
    ])

# -----------------------------------------------------------------------------------------
# Latent-space language GAN
# -----------------------------------------------------------------------------------------

LATENT_GAN = notebook(
    "latent_gan", "Latent-space language GAN without pre-training (Kojima et al.)",
    """\
A generator LSTM started from a latent code `z` writes sentences with
Gumbel-softmax words (Eq. 2); straight-through hard one-hots feed a
reconstructor that recovers `z` (Eq. 3, weight λ), and a per-prefix recurrent
discriminator scores every prefix. The notebook trains the GAN and the MLE
language-model baseline and draws the paper's Fig. 3: negative BLEU against
Self-BLEU over the word temperature τ2 (0 = greedy), with the training data as
a star. See `docs/latent_gan.md`.""",
    [
        md("""\
## Config

`paper` is Appendix B on the Texygen COCO captions (the builder downloads them
on a connected machine), `demo` the short sentences of the embedded corpus.
`RECON_WEIGHT` is λ (Fig. 4 sweeps 0, 0.5, 1, 2)."""),
        code("""\
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
SETTING = "demo" if SMOKE else "paper"     # paper | demo
RECON_WEIGHT = 1.0                         # lambda of Eq. 3
GAN_WORKDIR = notebook.run_dir(f"latent_gan-{SETTING}-lambda{RECON_WEIGHT:g}")
MLE_WORKDIR = notebook.run_dir(f"latent_gan-mle_{SETTING}")
gan_config = notebook.load_config("latent_gan", SETTING, {
    "model.recon_weight": RECON_WEIGHT,
    "train.batch_size": None,              # App. B: 256
    "stages.gan.num_steps": None,          # global steps = 2 x iterations (paper 100k)
    "stages.gan.learning_rate": None,      # Adam 2e-4, beta1 0.5
    "model.gumbel_temperature": 0.1,       # tau_1 of Eq. 2
    "model.word_temperature": 0.1,         # tau_2 of Eq. 2 during training
    "model.gen_loss": None,                # minimax (paper) | non_saturating (demo)
    "sweep.num_samples": None,             # sentences per temperature (paper 10k)
})
mle_config = notebook.load_config("latent_gan", f"mle_{SETTING}", {
    "stages.mle.num_steps": None,
})
print(train.dry_run(gan_config, GAN_WORKDIR))""", "config"),
        md(TRAIN_MD + """

Two runs: the GAN (one iteration of Algorithm 1 is a discriminator step and a
generator + reconstructor step, two global steps) and the MLE LSTM baseline."""),
        code("""\
print(train.run(gan_config, GAN_WORKDIR))
print(train.run(mle_config, MLE_WORKDIR))
notebook.show_image(f"{GAN_WORKDIR}/plots/training_curves.png")""", "train"),
        md("""\
## Sample

Sentences from random latent codes: greedy (τ2 = 0, a different sentence per
`z`) and sampled at τ2 = 1."""),
        code("""\
import jax
from vedgan.decode import DecodeOptions

with notebook.open_run(GAN_WORKDIR) as run:
  for mode in ("greedy", "sample"):      # tau_2 = 0, then tau_2 = 1
    print(f"--- {mode}")
    out = run.objective.generate(run.state, None, jax.random.key(0),
                                 DecodeOptions(mode=mode, temperature=1.0, num_samples=6))
    for text in run.objective.texts(out):
      print(text)""", "sample"),
        md("""\
## Evaluate: Fig. 3

The suites `latent_gan_fig3` and `latent_gan_table2` of `python -m vedgan.evaluate`
restore each run read-only, generate `sweep.num_samples` sentences at every τ2
(the same latent codes at every temperature) and score Texygen BLEU against the
reference split and Self-BLEU; they write `eval/latent_gan_fig3.json`,
`eval/latent_gan_fig3.png` and `eval/latent_gan_table2.md` (Table 2) in the GAN's
workdir."""),
        code("""\
from vedgan import eval_suites

TEMPERATURES = None                        # None: config.sweep (0.0, 0.1, ..., 1.0)
extra = {} if TEMPERATURES is None else {"temperatures": TEMPERATURES}
out = eval_suites.run_suites(GAN_WORKDIR, "latent_gan_fig3,latent_gan_table2", echo=None,
                             compare_workdirs=(MLE_WORKDIR,), **extra)
fig3 = out["latent_gan_fig3"]
n = str(fig3["plot_order"])
rows = [{"model": s["name"], "tau_2": p["temperature"], f"-BLEU-{n}": p["negative_bleu"][n],
         f"Self-BLEU-{n}": p["self_bleu"][n]} for s in fig3["sweeps"] for p in s["points"]]
notebook.show_markdown(notebook.markdown_table(rows, list(rows[0])))
notebook.show_image(f"{GAN_WORKDIR}/eval/latent_gan_fig3.png")
with open(f"{GAN_WORKDIR}/eval/latent_gan_table2.md", encoding="utf-8") as f:
  notebook.show_markdown(f.read())""", "evaluate"),
        md("""\
## From the command line

```bash
python -m vedgan.main --config configs/latent_gan.py:paper     --workdir runs/lgan_l1
python -m vedgan.main --config configs/latent_gan.py:mle_paper --workdir runs/lgan_mle
python -m vedgan.evaluate --workdir runs/lgan_l1 --compare_workdirs runs/lgan_mle \\
    --suite latent_gan_fig3,latent_gan_table2
```"""),
    ])

# -----------------------------------------------------------------------------------------
# Top-k softmax dialogue GAN
# -----------------------------------------------------------------------------------------

TOPK_GAN = notebook(
    "topk_gan", "Top-k softmax dialogue GAN (López Zorrilla et al.)",
    """\
The generator's output distribution is made differentiable by the top-k
softmax word-vector approximation `ũ_t` (Eq. 8–9), so the discriminator's score
back-propagates into a seq2seq generator. Algorithm 1 (MLE pre-training, a
replay corpus of generated responses, discriminator pre-training, then global
iterations of adversarial / discriminator / MLE blocks) is data in the config.
The evaluation suites `topk_gan_*` (`python -m vedgan.evaluate`) look at the
generators A–D of Section 5: their responses to the inputs of Table 1 and, for
A and D, the nearest-neighbour check of Fig. 3 (how often the emitted word's
vector is the nearest to `ũ_t`). See `docs/topk_gan.md`.""",
    [
        md("""\
## Config

`paper`: OpenSubtitles (prepare it with `docs/data.md`) and, optionally,
300-d fastText vectors for `W` (`model.word_vectors`); `demo`: the embedded
corpus. `mle_*` is the MLE-only baseline with as many MLE steps."""),
        code("""\
from vedgan import train

SMOKE = notebook.smoke_mode()              # VEDGAN_SMOKE=1 (CI): demo shrunk to a few steps
SETTING = "demo" if SMOKE else "paper"     # paper | demo
WORKDIR = notebook.run_dir(f"topk_gan-{SETTING}")
BASELINE_WORKDIR = notebook.run_dir(f"topk_gan-mle_{SETTING}")
knobs = {
    "gan.topk": 2,                         # k of the top-k softmax
    "train.batch_size": None,              # 256 throughout (Sec. 4)
    "stages.mle_pretrain.num_steps": None, # paper 50k
    "stages.adversarial.num_steps": None,  # global iterations x cycle length (paper 200)
    "stages.adversarial.gadv_lr_scale": 0.1,  # G's adversarial lr: ten times smaller
    "model.word_vectors": None,            # fastText file for W ("" = random)
}
config = notebook.load_config("topk_gan", SETTING, knobs)
baseline_config = notebook.load_config("topk_gan", f"mle_{SETTING}",
                                       {k: v for k, v in knobs.items() if "adversarial" not in k})
print(train.dry_run(config, WORKDIR))""", "config"),
        md(TRAIN_MD + """

The GAN, then its MLE baseline (`python -m vedgan.main` with `mle_*`)."""),
        code("""\
print(train.run(config, WORKDIR))
print(train.run(baseline_config, BASELINE_WORKDIR))
notebook.show_image(f"{WORKDIR}/plots/training_curves.png")""", "train"),
        md("""\
## Sample

Greedy responses (Eq. 3) of the final generator D to your own inputs."""),
        code("""\
import jax

INPUTS = ["hi!", "where are you going?", "i love you.", "what time is it?"]
with notebook.open_run(WORKDIR) as run:
  batch = run.objective.prompt_batch(run.inputs, INPUTS)
  out = run.objective.generate(run.state, batch, jax.random.key(0),
                               run.objective.decode_options(mode="greedy"))
  for text, response in zip(INPUTS, run.objective.texts(out)):
    print(f"{text!r} -> {response!r}")""", "sample"),
        md("""\
## Evaluate: Table 1 and Fig. 3

`vedgan.eval_suites.run_suites` is `python -m vedgan.evaluate`. Responses of A
(pretrained), B (after an MLE block), C (after the following adversarial block)
and D (final) to the inputs of Table 1, diversity of A, D and the MLE baseline
(`compare_workdirs`), and the nearest-neighbour check for k = 2…10. Models whose
checkpoint was not kept are rebuilt in memory from the latest kept one."""),
        code("""\
from vedgan import eval_suites

out = eval_suites.run_suites(WORKDIR, "topk_gan_table1,topk_gan_fig3,topk_gan_diversity",
                             compare_workdirs=(BASELINE_WORKDIR,))
notebook.show_markdown(out["topk_gan_table1"]["markdown"])
div = [{"model": m, **r} for m, r in out["topk_gan_diversity"]["models"].items()]
notebook.show_markdown(notebook.markdown_table(
    div, ["model", "step", "distinct_1", "distinct_2", "mean_length", "distinct_responses"]))
for plot in out["topk_gan_fig3"]["plots"]:
  notebook.show_image(f"{WORKDIR}/{plot}", width=480)""", "evaluate"),
        md("""\
## From the command line

```bash
python -m vedgan.main --config configs/topk_gan.py:paper --workdir runs/topk
python -m vedgan.main --config configs/topk_gan.py:mle_paper --workdir runs/topk-mle
python -m vedgan.evaluate --workdir runs/topk --compare_workdirs runs/topk-mle \\
    --suite topk_gan_fig3,topk_gan_table1,topk_gan_diversity
```"""),
    ])

NOTEBOOKS = {"quickstart": QUICKSTART, "mojitalk": MOJITALK, "happybot": HAPPYBOT,
             "collaborative_ved": COLLABORATIVE_VED, "latent_gan": LATENT_GAN,
             "topk_gan": TOPK_GAN}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="exit 1 if a notebook differs from what this script writes")
  args = parser.parse_args(argv)
  stale = []
  for name, nb in NOTEBOOKS.items():
    nbformat.validate(nb)
    text = nbformat.writes(nb) + "\n"
    path = os.path.join(HERE, f"{name}.ipynb")
    if args.check:
      try:
        with open(path, encoding="utf-8") as f:
          if f.read() != text:
            stale.append(path)
      except FileNotFoundError:
        stale.append(path)
    else:
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
  if stale:
    print("out of date (run python colab/build_notebooks.py): " + ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
