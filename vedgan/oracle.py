"""The synthetic oracle of SeqGAN / Texygen (issue 18): a random LSTM language model whose
distribution is known exactly, so a generator's samples can be scored against the truth.

Layout (SeqGAN's ``target_lstm.py``, Texygen's ``OracleLstm``), all float32::

    embedding [V, E]
    W_i, W_f, W_o, W_c [E, H]   U_i, U_f, U_o, U_c [H, H]   b_i, b_f, b_o, b_c [H]
    W_out [H, V]   b_out [V]

    x_1 = embedding[0]                       the first input is token 0
    h_0 = c_0 = 0
    i = sigmoid(x W_i + h U_i + b_i)         f, o likewise
    c~ = tanh(x W_c + h U_c + b_c)
    c = f * c + i * c~;   h = o * tanh(c)
    logits_t = h_t W_out + b_out;  y_t ~ softmax(logits_t);  x_{t+1} = embedding[y_t]

Sequences have a fixed length ``T`` and no end token. Defaults (SeqGAN): V = 5000,
E = H = 32, T = 20. Parameters are drawn from N(0, 1) with a seed (Texygen's random
oracle) or read from an ``.npz`` with the 15 arrays of :data:`PARAM_NAMES` (SeqGAN ships
its oracle as a pickle of these 15 arrays in this order; ``np.savez(path,
**dict(zip(PARAM_NAMES, arrays)))`` converts it).

Every function here is pure JAX (``jax.lax.scan`` over positions), static shapes:

>>> params = random_params(jax.random.key(0), vocab=50, embed=8, hidden=8)
>>> tokens = sample(params, jax.random.key(1), num=4, length=20)   # [4, 20] int32
>>> nll = token_nll(params, tokens)                                 # [4, 20] float32
"""
from __future__ import annotations

import hashlib
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vedgan.errors import ConfigError

#: The 15 arrays of an oracle, in SeqGAN's pickle order.
PARAM_NAMES = ("embedding", "W_i", "U_i", "b_i", "W_f", "U_f", "b_f", "W_o", "U_o", "b_o",
               "W_c", "U_c", "b_c", "W_out", "b_out")
#: The token read at the first step (SeqGAN's ``start_token = 0``).
START_TOKEN = 0
GATES = ("i", "f", "o", "c")


def param_shapes(vocab: int, embed: int, hidden: int) -> dict[str, tuple[int, ...]]:
  """``{name: shape}`` of an oracle with ``V = vocab``, ``E = embed``, ``H = hidden``."""
  shapes = {"embedding": (vocab, embed), "W_out": (hidden, vocab), "b_out": (vocab,)}
  for g in GATES:
    shapes.update({f"W_{g}": (embed, hidden), f"U_{g}": (hidden, hidden), f"b_{g}": (hidden,)})
  return {k: shapes[k] for k in PARAM_NAMES}


def dims(params: Mapping[str, jax.Array]) -> tuple[int, int, int]:
  """``(V, E, H)`` of ``params``."""
  vocab, embed = params["embedding"].shape
  return int(vocab), int(embed), int(params["U_i"].shape[0])


def random_params(key: jax.Array, vocab: int = 5000, embed: int = 32,
                  hidden: int = 32) -> dict[str, jax.Array]:
  """Every array drawn from N(0, 1) (Texygen's random oracle); array ``k`` of
  :data:`PARAM_NAMES` uses ``fold_in(key, k)``."""
  return {name: jax.random.normal(jax.random.fold_in(key, k), shape, jnp.float32)
          for k, (name, shape) in enumerate(param_shapes(vocab, embed, hidden).items())}


def check_params(params: Mapping[str, np.ndarray], where: str = "oracle parameters") -> None:
  """One-line :class:`ConfigError` for a missing, extra-dimensional or ill-shaped array."""
  missing = [n for n in PARAM_NAMES if n not in params]
  if missing:
    raise ConfigError(f"{where} lack array(s) {missing}; an oracle needs {list(PARAM_NAMES)}")
  emb = np.shape(params["embedding"])
  if len(emb) != 2 or np.ndim(params["U_i"]) != 2:
    raise ConfigError(f"{where}: embedding has shape {emb}, expected [V, E]")
  hidden = np.shape(params["U_i"])[0]
  for name, shape in param_shapes(emb[0], emb[1], hidden).items():
    if tuple(np.shape(params[name])) != shape:
      raise ConfigError(f"{where}: {name} has shape {tuple(np.shape(params[name]))}, expected "
                        f"{shape} (V={emb[0]}, E={emb[1]}, H={hidden} from embedding and U_i)")


def load_params(path: str) -> dict[str, jax.Array]:
  """The 15 arrays of the ``.npz`` at ``path`` (float32), checked by :func:`check_params`."""
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isfile(path):
    raise ConfigError(f"config.data.oracle_params={path} does not exist (an .npz with arrays "
                      f"{', '.join(PARAM_NAMES)})")
  with np.load(path) as f:
    arrays = {k: np.asarray(f[k], np.float32) for k in f.files}
  check_params(arrays, f"config.data.oracle_params={path}")
  return {k: jnp.asarray(arrays[k]) for k in PARAM_NAMES}


def save_params(path: str, params: Mapping[str, jax.Array]) -> None:
  """Writes ``params`` as the ``.npz`` layout :func:`load_params` reads."""
  np.savez(path, **{k: np.asarray(params[k], np.float32) for k in PARAM_NAMES})


def fingerprint(params: Mapping[str, jax.Array]) -> str:
  """sha256 hex digest of the 15 arrays (names, shapes, float32 bytes)."""
  h = hashlib.sha256()
  for k in PARAM_NAMES:
    a = np.ascontiguousarray(np.asarray(params[k], np.float32))
    h.update(f"{k}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def from_config(data_config) -> dict[str, jax.Array]:
  """The oracle of ``config.data``: ``oracle_params`` (an .npz) if set, else N(0, 1) with
  ``oracle_seed`` at ``oracle_vocab`` x ``oracle_embed`` x ``oracle_hidden``."""
  if data_config.oracle_params:
    params = load_params(data_config.oracle_params)
    if dims(params)[0] != int(data_config.oracle_vocab):
      raise ConfigError(f"config.data.oracle_params has V={dims(params)[0]} but "
                        f"config.data.oracle_vocab={data_config.oracle_vocab}; make them agree")
    return params
  return random_params(jax.random.key(int(data_config.oracle_seed)), int(data_config.oracle_vocab),
                       int(data_config.oracle_embed), int(data_config.oracle_hidden))


# -- the network ---------------------------------------------------------------------------
def cell(params, carry: tuple[jax.Array, jax.Array], x: jax.Array):
  """One LSTM step: ``carry = (h, c)`` each ``[B, H]``, ``x [B, E]`` -> ``((h, c), logits [B, V])``."""
  h, c = carry
  gate = lambda g, act: act(x @ params[f"W_{g}"] + h @ params[f"U_{g}"] + params[f"b_{g}"])
  i, f, o = gate("i", jax.nn.sigmoid), gate("f", jax.nn.sigmoid), gate("o", jax.nn.sigmoid)
  c = f * c + i * gate("c", jnp.tanh)
  h = o * jnp.tanh(c)
  return (h, c), h @ params["W_out"] + params["b_out"]


def _initial(params, num: int):
  _, _, hidden = dims(params)
  zeros = jnp.zeros((num, hidden), jnp.float32)
  return (zeros, zeros), jnp.full((num,), START_TOKEN, jnp.int32)


def logits(params, tokens: jax.Array) -> jax.Array:
  """Teacher-forced logits ``[B, T, V]`` of ``tokens [B, T]``: step ``t`` reads
  ``tokens[:, t-1]`` (token 0 at ``t = 0``)."""
  carry, first = _initial(params, tokens.shape[0])
  inputs = jnp.concatenate([first[:, None], tokens[:, :-1].astype(jnp.int32)], axis=1)

  def body(carry, prev):
    return cell(params, carry, jnp.take(params["embedding"], prev, axis=0))

  _, out = jax.lax.scan(body, carry, jnp.swapaxes(inputs, 0, 1))
  return jnp.swapaxes(out, 0, 1)


def token_nll(params, tokens: jax.Array) -> jax.Array:
  """``-log p_oracle(y_t | y_<t)``, float32 ``[B, T]``, of ``tokens [B, T]`` (ids in ``[0, V)``)."""
  logp = jax.nn.log_softmax(logits(params, tokens), axis=-1)
  return -jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
  """One draw per row from ``softmax(logits [B, V])`` by inverting the CDF with a single
  uniform per row (``[B]`` int32): exact up to float32 rounding of the cumulative sum, and
  ``V`` times fewer random numbers than Gumbel-max (:func:`vedgan.relax.gumbel_max`,
  ``jax.random.categorical``), which dominates the cost of sampling at V = 5000 on a CPU."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  u = jax.random.uniform(key, logits.shape[:-1] + (1,), jnp.float32) * cdf[..., -1:]
  return jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def sample_with_entropy(params, key: jax.Array, num: int, length: int,
                        temperature: float | jax.Array = 1.0):
  """``(tokens [num, length] int32, entropy [num, length] float32)``: ancestral samples from
  ``softmax(logits / temperature)`` (step ``t`` draws with ``fold_in(key, t)``) and the exact
  entropy of the distribution each token was drawn from (for tests and the floor)."""
  carry, prev = _initial(params, num)

  def body(state, t):
    carry, prev = state
    carry, o = cell(params, carry, jnp.take(params["embedding"], prev, axis=0))
    o = o / temperature
    token = categorical(jax.random.fold_in(key, t), o)
    logp = jax.nn.log_softmax(o, axis=-1)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return (carry, token), (token, entropy)

  _, (tokens, entropy) = jax.lax.scan(body, (carry, prev), jnp.arange(length, dtype=jnp.int32))
  return jnp.swapaxes(tokens, 0, 1), jnp.swapaxes(entropy, 0, 1)


def sample(params, key: jax.Array, num: int, length: int = 20,
           temperature: float | jax.Array = 1.0) -> jax.Array:
  """``[num, length]`` int32 oracle sequences (temperature 1 = the oracle's distribution)."""
  return sample_with_entropy(params, key, num, length, temperature)[0]


#: jitted forms (``num`` and ``length`` static).
sample_jit = jax.jit(sample, static_argnames=("num", "length"))
token_nll_jit = jax.jit(token_nll)


def sample_many(params, key: jax.Array, num: int, length: int, chunk: int = 1000) -> np.ndarray:
  """``[num, length]`` int32 numpy: chunk ``i`` (``chunk`` rows) draws with
  ``fold_in(key, i)``, so the result does not depend on memory, only on ``chunk``."""
  out = [np.asarray(sample_jit(params, jax.random.fold_in(key, i), num=chunk, length=length))
         for i in range(-(-int(num) // chunk))]
  return np.concatenate(out)[:num] if out else np.zeros((0, length), np.int32)


def mean_nll(params, tokens: np.ndarray, chunk: int = 1000) -> float:
  """Mean per-token NLL under the oracle of ``tokens [N, T]`` (every position counted),
  in fixed ``chunk``-row calls (the last padded with token 0 and not counted)."""
  tokens = np.asarray(tokens, np.int32)
  n = tokens.shape[0]
  if n == 0:
    return float("nan")
  total = 0.0
  for start in range(0, n, chunk):
    rows = tokens[start:start + chunk]
    pad = chunk - rows.shape[0]
    rows = np.concatenate([rows, np.zeros((pad, tokens.shape[1]), np.int32)]) if pad else rows
    nll = np.asarray(token_nll_jit(params, jnp.asarray(rows)), np.float64)
    total += float(nll[:chunk - pad].sum())
  return total / (n * tokens.shape[1])
