"""vedgan.nn.rnn against a per-step reference written here from the textbook equations.

The reference cells below are plain Python loops over time that read the layer's
parameters (the fused ``[D, 3H]`` / ``[D, 4H]`` input kernel and ``[H, 3H]`` /
``[H, 4H]`` hidden kernel) column block by column block, so a wrong gate order,
a missing bias, a broken mask, reverse or unroll, or a remat that changes the
numbers makes the comparison fail. Values and gradients (w.r.t. every parameter
and the inputs) must agree to float32 tolerance (``atol = rtol = 1e-5``).

Time budget: about 10 s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan.nn.rnn import BiGRU, GRU, LSTM

B, T, D, H = 3, 5, 5, 4
TOL = dict(atol=1e-5, rtol=1e-5)


def _sigmoid(x):
  return 1.0 / (1.0 + jnp.exp(-x))


def _time_order(reverse):
  return range(T - 1, -1, -1) if reverse else range(T)


def reference_gru(p, x, mask, reverse=False):
  """Cho et al. (2014) GRU, one step at a time. Returns (outputs[B, T, H], final[B, H])."""
  w, bi = p["input"]["kernel"], p["input"]["bias"]
  u, bh = p["w_hidden"], p["b_hidden"]
  blk = lambda a, k: a[..., k * H:(k + 1) * H]
  h = jnp.zeros((x.shape[0], H))
  outputs = [None] * T
  for t in _time_order(reverse):
    xt = x[:, t]
    reset = _sigmoid(xt @ blk(w, 0) + blk(bi, 0) + h @ blk(u, 0) + blk(bh, 0))
    update = _sigmoid(xt @ blk(w, 1) + blk(bi, 1) + h @ blk(u, 1) + blk(bh, 1))
    cand = jnp.tanh(xt @ blk(w, 2) + blk(bi, 2) + reset * (h @ blk(u, 2) + blk(bh, 2)))
    new = (1.0 - update) * cand + update * h
    outputs[t] = new
    m = mask[:, t:t + 1]
    h = m * new + (1.0 - m) * h
  return jnp.stack(outputs, axis=1), h


def reference_lstm(p, x, mask, reverse=False, forget_bias=1.0):
  """Hochreiter & Schmidhuber LSTM, gates in the order (i, f, g, o)."""
  w, bi = p["input"]["kernel"], p["input"]["bias"]
  u, bh = p["w_hidden"], p["b_hidden"]
  blk = lambda a, k: a[..., k * H:(k + 1) * H]
  pre = lambda xt, h, k: xt @ blk(w, k) + blk(bi, k) + h @ blk(u, k) + blk(bh, k)
  c = jnp.zeros((x.shape[0], H))
  h = jnp.zeros((x.shape[0], H))
  outputs = [None] * T
  for t in _time_order(reverse):
    xt = x[:, t]
    i = _sigmoid(pre(xt, h, 0))
    f = _sigmoid(pre(xt, h, 1) + forget_bias)
    g = jnp.tanh(pre(xt, h, 2))
    o = _sigmoid(pre(xt, h, 3))
    new_c = f * c + i * g
    new_h = o * jnp.tanh(new_c)
    outputs[t] = new_h
    m = mask[:, t:t + 1]
    c = m * new_c + (1.0 - m) * c
    h = m * new_h + (1.0 - m) * h
  return jnp.stack(outputs, axis=1), (c, h)


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  lengths = np.array([T, 3, 1])
  mask = jnp.asarray(np.arange(T)[None, :] < lengths[:, None], jnp.float32)
  weights = jnp.asarray(rng.normal(size=(B, T, 2 * H)), jnp.float32)
  return x, mask, weights


def _randomize(params, seed=1):
  """Non-zero biases so that every bias term is exercised."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [0.5 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


def _loss(fn, weights, mask):
  """``sum(w * outputs * mask) + sum(final ** 2)`` of ``fn(params, x)``, with the outputs."""

  def f(p, xs):
    ys, final = fn(p, xs)
    out = (ys * weights[..., :ys.shape[-1]] * mask[..., None]).sum()
    return out + sum(jnp.sum(a ** 2) for a in jax.tree.leaves(final)), (ys, final)

  return f


def _check(layer_fns, ref_fn, params, x, mask, weights):
  """Values and gradients (params and inputs) of each layer variant against the reference.

  The reference runs eagerly (op by op) once; each layer variant is jitted.
  """
  (l2, (ys2, fin2)), g2 = jax.value_and_grad(_loss(ref_fn, weights, mask), (0, 1),
                                             has_aux=True)(params, x)
  real = np.asarray(mask)[..., None] > 0
  for layer_fn in layer_fns:
    grad_fn = jax.value_and_grad(_loss(layer_fn, weights, mask), (0, 1), has_aux=True)
    (l1, (ys1, fin1)), g1 = jax.jit(grad_fn)(params, x)
    np.testing.assert_allclose(np.where(real, ys1, 0), np.where(real, ys2, 0), **TOL)
    for a, b in zip(jax.tree.leaves(fin1), jax.tree.leaves(fin2)):
      np.testing.assert_allclose(a, b, **TOL)
    np.testing.assert_allclose(l1, l2, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), g1, g2)


CASES = [  # (use mask, reverse, [(unroll, remat), ...] layer variants against one reference)
    (False, False, [(1, False)]),
    (True, False, [(3, False), (4, True)]),
    (True, True, [(1, False), (2, True)]),
]


def _variants(cls, variants, mask, reverse, **kwargs):
  fns = []
  for unroll, remat in variants:
    layer = cls(H, unroll=unroll, remat=remat, **kwargs)
    fns.append(lambda p, xs, layer=layer: layer.apply({"params": p}, xs, mask, reverse=reverse))
  return fns


@pytest.mark.parametrize("use_mask,reverse,variants", CASES)
def test_gru_matches_reference(use_mask, reverse, variants):
  x, mask, weights = _data()
  if not use_mask:
    mask = jnp.ones_like(mask)
  params = _randomize(GRU(H).init(jax.random.key(0), x)["params"])
  fns = _variants(GRU, variants, mask if use_mask else None, reverse)
  _check(fns, lambda p, xs: reference_gru(p, xs, mask, reverse), params, x, mask, weights)


@pytest.mark.parametrize("use_mask,reverse,variants", CASES)
def test_lstm_matches_reference(use_mask, reverse, variants):
  x, mask, weights = _data(2)
  if not use_mask:
    mask = jnp.ones_like(mask)
  params = _randomize(LSTM(H).init(jax.random.key(0), x)["params"], seed=3)
  fns = _variants(LSTM, variants, mask if use_mask else None, reverse, forget_bias=1.0)
  _check(fns, lambda p, xs: reference_lstm(p, xs, mask, reverse), params, x, mask, weights)


def test_bigru_matches_reference():
  """Two stacked layers: layer 2 reads ``[fwd; bwd]`` of layer 1; final is the top layer's."""
  x, mask, weights = _data(4)
  layers = [BiGRU(H, num_layers=2, unroll=u, remat=r) for u, r in [(1, False), (2, True)]]
  params = _randomize(layers[0].init(jax.random.key(0), x, mask)["params"], seed=5)
  fns = [lambda p, xs, layer=layer: layer.apply({"params": p}, xs, mask) for layer in layers]

  def ref_fn(p, xs):
    out, final = xs, None
    for l in range(2):
      fo, fh = reference_gru(p[f"fwd_{l}"], out, mask)
      bo, bh = reference_gru(p[f"bwd_{l}"], out, mask, reverse=True)
      out = jnp.concatenate([fo, bo], axis=-1)
      final = jnp.concatenate([fh, bh], axis=-1)
    return out, final

  _check(fns, ref_fn, params, x, mask, weights)


def test_remat_puts_a_checkpoint_in_the_scan():
  """``remat=True`` really wraps the scan body (a ``checkpoint``/``remat`` equation appears)."""
  x, mask, _ = _data()
  for remat in (False, True):
    layer = LSTM(H, remat=remat)
    params = layer.init(jax.random.key(0), x)["params"]
    grad = jax.grad(lambda p: layer.apply({"params": p}, x, mask)[0].sum())
    text = str(jax.make_jaxpr(grad)(params))
    assert (("checkpoint" in text) or ("remat" in text)) == remat


def test_bf16_compute_keeps_float32_carries():
  """dtype=bfloat16: float32 outputs/carries, close to the float32 layer (bf16 tolerance)."""
  x, mask, _ = _data()
  layer32, layer16 = LSTM(H), LSTM(H, dtype=jnp.bfloat16)
  params = layer32.init(jax.random.key(0), x)["params"]
  ys32, (c32, h32) = layer32.apply({"params": params}, x, mask)
  ys16, (c16, h16) = layer16.apply({"params": params}, x, mask)
  assert ys16.dtype == c16.dtype == h16.dtype == jnp.float32
  np.testing.assert_allclose(ys16, ys32, atol=3e-2)
