"""Scoring a generator against the synthetic oracle (issue 18; SeqGAN Sec. 4, Texygen).

At each evaluation of a run on ``data.name = "oracle"`` (:meth:`vedgan.train.Trainer.evaluate`
adds these to the validation row of ``metrics.jsonl``):

* ``nll_oracle``: mean per-token NLL under the oracle of ``data.oracle_eval_samples``
  (10,000 in SeqGAN) sequences sampled from the model at temperature 1, all ``T``
  positions counted (quality). Temperature 1 is the model's own distribution: for the
  latent GAN, whose words are drawn from ``softmax(o / tau_2)`` in training (Eq. 2,
  ``model.word_temperature`` = 0.1), that is ``softmax(o / tau_2)``, not ``softmax(o)``;
  a sweep's temperature ``T`` multiplies ``tau_2``;
* ``nll_test``: the model's mean per-token NLL of the held-out oracle ``test`` split, the
  ``T`` oracle tokens counted, not the models' final blank (coverage; models with a
  likelihood only: the unconditional language model ``lstm_lm``);
* ``nll_oracle_data``: ``nll_oracle`` of fresh oracle samples (the entropy floor; computed
  once per run with a fixed seed);
* ``model_special_mass``: the mean probability the model puts on its six special ids
  (:class:`vedgan.data.identity_tokenizer.IdentityTokenizer`) along the sampled prefixes.

Model samples are drawn from the model's softmax restricted to the oracle's ``V`` tokens
(the specials, e.g. an early ``<blank>``, are no oracle token; ``model_special_mass``
says how much probability that renormalisation removes; it is ~0 after training). The
scored samples are written to ``WORKDIR/eval/oracle_samples.txt`` (oracle ids, one
sequence per line).

Every model function is one jitted ``lax.scan`` over ``T`` on a fixed chunk of rows
(:data:`CHUNK`, or fewer when fewer samples are asked for), so shapes are static.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vedgan import oracle
from vedgan.data import oracle_data
from vedgan.data.identity_tokenizer import IdentityTokenizer
from vedgan.errors import ConfigError
from vedgan.nn import gan

CHUNK = 1000
SAMPLES_FILE = "oracle_samples.txt"
OFFSET = IdentityTokenizer.OFFSET


def applies(config) -> bool:
  """Whether ``config`` trains on the oracle (``data.name == "oracle"``)."""
  return str(config.data.name).split("/")[0] == oracle_data.NAME


def has_likelihood(objective) -> bool:
  """Unconditional generators without a latent code (``lstm_lm``) have an exact likelihood."""
  return getattr(objective, "latent_dim", None) == 0


def _check(objective) -> None:
  if not isinstance(getattr(objective, "generator", None), gan.Generator) or not hasattr(
      objective, "latent"):
    raise ConfigError(f"objective {objective.name!r} is not an unconditional sentence generator; "
                      "the oracle benchmark scores lstm_lm and latent_gan (configs/oracle.py)")


@functools.lru_cache(maxsize=None)
def _model_fns(generator: gan.Generator, latent_dim: int, length: int):
  """``(sample, token_nll)``, jitted, for ``generator``.

  ``sample(params, key, temperature, num) -> (oracle ids [num, T], special mass [num, T])``:
  ``z ~ N(0, I)`` from ``fold_in(key, 0)`` (latent models), step ``t`` draws from
  ``softmax(o_t[OFFSET:] / temperature)`` with ``fold_in(fold_in(key, 1), t)``.
  ``token_nll(params, tokens [B, T], temperature) -> [B, T]``: ``-log p_model(y_t | y_<t)``
  of oracle ids under ``softmax(o_t / temperature)`` (teacher forced from ``<s>``, the
  model's full softmax).
  """

  def sample(params, key, temperature, num):
    variables = {"params": params}
    z = jax.random.normal(jax.random.fold_in(key, 0), (num, latent_dim), jnp.float32)
    carry0 = generator.apply(variables, z, method=gan.Generator.initial_state)
    prev0 = jnp.full((num,), generator.start_id, jnp.int32)
    k = jax.random.fold_in(key, 1)

    def body(state, t):
      carry, prev = state
      carry, o = generator.apply(variables, carry, prev, t, method=gan.Generator.step)
      special = jnp.sum(jax.nn.softmax(o, axis=-1)[:, :OFFSET], axis=-1)
      tok = oracle.categorical(jax.random.fold_in(k, t), o[:, OFFSET:] / temperature)
      return (carry, tok + OFFSET), (tok, special)

    _, (tokens, special) = jax.lax.scan(body, (carry0, prev0), jnp.arange(length, dtype=jnp.int32))
    return jnp.swapaxes(tokens, 0, 1), jnp.swapaxes(special, 0, 1)

  def token_nll(params, tokens, temperature):
    ids = tokens.astype(jnp.int32) + OFFSET
    tokens_in = jnp.concatenate([jnp.full((ids.shape[0], 1), generator.start_id, jnp.int32),
                                 ids[:, :-1]], axis=1)
    z = jnp.zeros((ids.shape[0], latent_dim), jnp.float32)
    logits = generator.apply({"params": params}, z, tokens_in) / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, ids[..., None], axis=-1)[..., 0]

  return (jax.jit(sample, static_argnames=("num",)), jax.jit(token_nll))


class OracleEvaluator:
  """The oracle, its test split and the floor of one run; :meth:`metrics` scores a state."""

  def __init__(self, config, objective):
    _check(objective)
    d = config.data
    self.config, self.objective = config, objective
    self.params = oracle.from_config(d)
    self.length = int(d.oracle_length)
    if int(config.data.max_len) != self.length + 1:
      raise ConfigError(f"config.data.max_len={config.data.max_len} must be oracle_length + 1 = "
                        f"{self.length + 1} (T oracle tokens and the models' final blank)")
    if objective.tokenizer.vocab_size != oracle.dims(self.params)[0] + OFFSET:
      raise ConfigError(f"tokenizer.vocab_size={objective.tokenizer.vocab_size} must be the "
                        f"oracle's V + {OFFSET} = {oracle.dims(self.params)[0] + OFFSET}")
    self.num_samples = int(d.oracle_eval_samples)
    if self.num_samples < 1:
      raise ConfigError(f"config.data.oracle_eval_samples={self.num_samples} must be >= 1")
    self.chunk = min(CHUNK, self.num_samples)
    self.test = oracle_data.load_tokens(d, "test")
    self.seed = int(config.seed) + 11
    self._floor = None
    #: the word temperature the generator was trained at: tau_2 of the latent GAN (Eq. 2: its
    #: words, all the discriminator ever sees, are drawn from softmax(o / tau_2)), 1 for an
    #: MLE model. Sampling "at temperature T" draws from softmax(o / (base * T)), so T = 1 is
    #: the model's own distribution.
    self.base_temperature = (1.0 if has_likelihood(objective)
                             else float(config.model.word_temperature))

  @property
  def floor(self) -> float:
    """``nll_oracle_data``: the oracle's NLL of ``oracle_eval_samples`` fresh samples
    (seed ``config.seed + 12``; not the cached splits)."""
    if self._floor is None:
      tokens = oracle.sample_many(self.params, jax.random.key(self.seed + 1), self.num_samples,
                                  self.length, self.chunk)
      self._floor = oracle.mean_nll(self.params, tokens, self.chunk)
    return self._floor

  def model_samples(self, state, temperature: float = 1.0, seed: int | None = None):
    """``(tokens [N, T] oracle ids, mean special mass)`` at ``temperature`` relative to the
    model's own (:attr:`base_temperature`); chunk ``i`` uses ``fold_in(key(seed), i)``
    (default seed ``config.seed + 11``)."""
    sample, _ = _model_fns(self.objective.generator, int(self.objective.latent_dim), self.length)
    key = jax.random.key(self.seed if seed is None else int(seed))
    params = state.params["generator"]
    toks, mass = [], []
    for i in range(-(-self.num_samples // self.chunk)):
      t, m = sample(params, jax.random.fold_in(key, i),
                    jnp.float32(temperature * self.base_temperature), num=self.chunk)
      toks.append(np.asarray(t))
      mass.append(np.asarray(m, np.float64))
    n = self.num_samples
    return np.concatenate(toks)[:n], float(np.concatenate(mass)[:n].mean())

  def nll_test(self, state, temperature: float = 1.0) -> float:
    """The model's mean per-token NLL of the test split under its softmax at
    ``temperature`` (fixed ``chunk`` rows per call)."""
    _, token_nll = _model_fns(self.objective.generator, 0, self.length)
    params = state.params["generator"]
    total, n = 0.0, self.test.shape[0]
    for start in range(0, n, self.chunk):
      rows = self.test[start:start + self.chunk]
      pad = self.chunk - rows.shape[0]
      if pad:
        rows = np.concatenate([rows, np.zeros((pad, self.length), np.int32)])
      nll = token_nll(params, jnp.asarray(rows), jnp.float32(temperature))
      total += float(np.asarray(nll, np.float64)[
          :self.chunk - pad].sum())
    return total / (n * self.length)

  def metrics(self, state, out_dir: str | None = None, temperature: float = 1.0) -> dict:
    """``{"nll_oracle", "nll_test" (likelihood models), "nll_oracle_data",
    "model_special_mass"}``; writes ``out_dir/oracle_samples.txt`` when ``out_dir``."""
    tokens, mass = self.model_samples(state, temperature)
    out = {"nll_oracle": oracle.mean_nll(self.params, tokens, self.chunk)}
    if has_likelihood(self.objective):
      out["nll_test"] = self.nll_test(state)
    out["nll_oracle_data"] = self.floor
    out["model_special_mass"] = mass
    if out_dir:
      os.makedirs(out_dir, exist_ok=True)
      tmp = os.path.join(out_dir, f".{SAMPLES_FILE}.tmp")
      oracle_data.write_tokens(tmp, tokens)
      os.replace(tmp, os.path.join(out_dir, SAMPLES_FILE))
    return out


def trainer_metrics(trainer) -> dict:
  """The oracle metrics of ``trainer``'s state (its evaluator is built once and kept on
  the trainer); the chief writes the samples to ``WORKDIR/eval/``."""
  ev = getattr(trainer, "_oracle_evaluator", None)
  if ev is None or ev.objective is not trainer.objective:
    ev = trainer._oracle_evaluator = OracleEvaluator(trainer.config, trainer.objective)  # pylint: disable=protected-access
  out_dir = os.path.join(trainer.workdir, "eval") if trainer.is_chief else None
  return ev.metrics(trainer.state, out_dir)
