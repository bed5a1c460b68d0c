r"""Evaluates a checkpoint of a trained run (the latest unless ``--checkpoint`` says otherwise).

  python -m vedgan.evaluate --workdir /tmp/run [--suite likelihood,bleu,diversity] \
      [--checkpoint latest|best|STEP] \
      [--split validation] [--num_samples 0] [--decode_mode greedy|sample|beam] \
      [--temperature T] [--beam_width K] [--temperatures 0,0.1,...,1] \
      [--word_vectors glove.txt] [--max_n 4] [--iw_samples K] [--likelihood_batches N]

Writes ``WORKDIR/eval/<suite>.json`` (values, each metric's comparability
settings, checkpoint step, split, decoding settings), ``eval/responses.jsonl``
and, for the sweep, ``eval/quality_diversity.png``, and prints one summary line
per suite. Suites: likelihood, bleu, diversity, embedding, sweep (see
:mod:`vedgan.eval_suites`, which notebooks can call directly). The run's files
are only read; nothing outside ``eval/`` is written.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from vedgan import eval_suites
from vedgan.errors import ConfigError, VedganError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory written by python -m vedgan.main.")
flags.DEFINE_string("suite", ",".join(eval_suites.DEFAULT_SUITES),
                    "Comma list of suites: " + ", ".join(eval_suites.known_suites()) + ".")
flags.DEFINE_string("split", "validation", "Dataset split to evaluate on.")
flags.DEFINE_integer("num_samples", 0,
                     "Contexts decoded (the split's first N); 0 = the whole split.")
flags.DEFINE_string("decode_mode", None, "greedy | sample | beam (default: config.decode.mode).")
flags.DEFINE_float("temperature", None, "Sampling temperature (default: config.decode).")
flags.DEFINE_integer("top_k", None, "Sample from the top k tokens; 0 = all (default: config).")
flags.DEFINE_integer("beam_width", None, "Beam width (default: config.decode.beam_width).")
flags.DEFINE_float("length_penalty", None, "Beam-search GNMT alpha (default: config.decode).")
flags.DEFINE_list("temperatures", [f"{t:g}" for t in eval_suites.metrics.KOJIMA_TEMPERATURES],
                  "Temperatures of the quality-diversity sweep (0 = greedy).")
flags.DEFINE_string("word_vectors", None,
                    "word2vec/GloVe/fastText file for the embedding suite (default: the "
                    "model's own input embedding table, on token ids).")
flags.DEFINE_integer("max_n", 4, "BLEU / Self-BLEU n-gram order.")
flags.DEFINE_string("tokenization", "word", "How responses and references become tokens for "
                    "BLEU and diversity: " + ", ".join(eval_suites.TOKENIZATIONS) + ".")
flags.DEFINE_integer("seed", 0, "Decoding RNG seed.")
flags.DEFINE_integer("batch_size", 0, "Decoding batch size; 0 = config.train.eval_batch_size.")
flags.DEFINE_integer("plot_context", -1, "collaborative_ved_fig3: the validation example whose "
                     "context is plotted; -1 = the one with the most distinct responses.")
flags.DEFINE_list("compare_workdirs", [], "Further run directories compared with --workdir "
                  "by multi-run suites (latent_gan_fig3, latent_gan_fig4, latent_gan_table2).")
flags.DEFINE_string("checkpoint", "latest", "The weights evaluated: latest, best (the "
                    "checkpoint kept by --config.train.select_by) or a step number.")
flags.DEFINE_integer("iw_samples", 0, "K of the importance-weighted likelihood bounds; "
                     "0 = the run's config.likelihood.iw_samples.")
flags.DEFINE_integer("likelihood_batches", 0, "Validation batches the likelihoods read "
                     "(config.train.eval_batch_size rows each); 0 = the whole split.")
flags.DEFINE_bool("debug_errors", False, "Show full tracebacks for user errors.")
flags.mark_flags_as_required(["workdir"])


def _temperatures(values: list[str]) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise ConfigError(f"--temperatures {','.join(values)} must be numbers, e.g. 0,0.5,1") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    eval_suites.run_suites(
        FLAGS.workdir, FLAGS.suite, echo=lambda line: print(line, flush=True),
        split=FLAGS.split, num_samples=FLAGS.num_samples, decode_mode=FLAGS.decode_mode,
        temperature=FLAGS.temperature, top_k=FLAGS.top_k, beam_width=FLAGS.beam_width,
        length_penalty=FLAGS.length_penalty, temperatures=_temperatures(FLAGS.temperatures),
        word_vectors=FLAGS.word_vectors, max_n=FLAGS.max_n, tokenization=FLAGS.tokenization,
        seed=FLAGS.seed, batch_size=FLAGS.batch_size, plot_context=FLAGS.plot_context,
        compare_workdirs=tuple(FLAGS.compare_workdirs), checkpoint=FLAGS.checkpoint,
        iw_samples=FLAGS.iw_samples, likelihood_batches=FLAGS.likelihood_batches)
  except (VedganError, FileNotFoundError, PermissionError) as e:
    if FLAGS.debug_errors:
      raise
    print(f"vedgan: error: {e}", file=sys.stderr)
    sys.exit(2)


def run_cli(argv: list[str] | None = None):
  """The entry point of ``python -m vedgan.evaluate`` and ``vedgan evaluate``."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  app.run(main, argv=argv)


if __name__ == "__main__":
  run_cli()
