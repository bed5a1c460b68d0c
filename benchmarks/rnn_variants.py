"""Formulations of a GRU / LSTM / BiGRU layer timed by ``benchmarks/rnn_layers.py``.

Each row is ``(params, fn)`` with ``fn(params, x[B, T, D]) -> (outputs[B, T, H],
final carry)``. The pure-function rows read vedgan's parameter tree (``input``
``{kernel [D, kH], bias [kH]}``, ``w_hidden [H, kH]``, ``b_hidden [kH]``; k = 3 for
the GRU, 4 for the LSTM) and compute the same numbers as ``vedgan.nn.rnn`` (checked
by :func:`check_rows`), so only the formulation differs. The mask ``[B, T]`` is
closed over, as a model's batch mask would be.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vedgan.nn import rnn

f32 = jnp.float32


def loss_of(fn, mask):
  """``sum(outputs * mask) + sum(final)``: every output and the final carry get a gradient."""

  def loss(params, x):
    ys, final = fn(params, x)
    return (ys * mask[..., None]).sum() + sum(a.sum() for a in jax.tree.leaves(final))

  return loss


# -- cells over explicit arrays --------------------------------------------------------


def _gru_new(xp, hh, h):
  n3 = h.shape[-1]
  r = jax.nn.sigmoid(xp[:, :n3] + hh[:, :n3])
  u = jax.nn.sigmoid(xp[:, n3:2 * n3] + hh[:, n3:2 * n3])
  n = jnp.tanh(xp[:, 2 * n3:] + r * hh[:, 2 * n3:])
  return (1.0 - u) * n + u * h


def _lstm_new(gates, c, forget_bias=1.0):
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return c, jax.nn.sigmoid(o) * jnp.tanh(c)


def _keep(mode, m, new, old):
  if mode == "arith":
    mm = m[:, None]
    return old + mm * (new - old)
  return jnp.where(m[:, None] > 0, new, old)


def _scan(body, carry, xs, unroll, remat, reverse=False):
  if remat:
    body = jax.checkpoint(body)
  return jax.lax.scan(body, carry, xs, unroll=unroll, reverse=reverse)


# -- GRU -------------------------------------------------------------------------------


def gru_hoisted(mask, keep="where", unroll=1, reverse=False):
  """The layer before issue 24: ``[T, B, 3H]`` input projection before the scan."""

  def fn(p, x):
    w, bi, u, bh = p["input"]["kernel"], p["input"]["bias"], p["w_hidden"], p["b_hidden"]
    xp = jnp.swapaxes(x @ w + bi, 0, 1)

    def body(h, inp):
      xt, m = inp
      new = _gru_new(xt, h @ u + bh, h)
      return _keep(keep, m, new, h), new

    final, ys = _scan(body, jnp.zeros((x.shape[0], u.shape[0])), (xp, mask.T), unroll, False,
                      reverse)
    return jnp.swapaxes(ys, 0, 1), final

  return fn


def gru_inloop(mask, keep="where", unroll=1, remat=False, split=False, reverse=False):
  """The input projection of step ``t`` inside the scan body (``x_t W + b``, ``[B, 3H]``)."""

  def fn(p, x):
    w, bi, u, bh = p["input"]["kernel"], p["input"]["bias"], p["w_hidden"], p["b_hidden"]
    hsz = u.shape[0]

    def body(h, inp):
      xt, m = inp
      if split:
        xp = jnp.concatenate([xt @ w[:, k * hsz:(k + 1) * hsz] for k in range(3)], -1) + bi
        hh = jnp.concatenate([h @ u[:, k * hsz:(k + 1) * hsz] for k in range(3)], -1) + bh
      else:
        xp, hh = xt @ w + bi, h @ u + bh
      new = _gru_new(xp, hh, h)
      return _keep(keep, m, new, h), new

    final, ys = _scan(body, jnp.zeros((x.shape[0], hsz)), (jnp.swapaxes(x, 0, 1), mask.T),
                      unroll, remat, reverse)
    return jnp.swapaxes(ys, 0, 1), final

  return fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gru_vjp_scan(xp, u, bh, ms, unroll):
  return _gru_vjp_fwd(xp, u, bh, ms, unroll)[0]


def _gru_vjp_fwd(xp, u, bh, ms, unroll):
  hsz = u.shape[0]

  def body(h, inp):
    xt, m = inp
    hh = h @ u + bh
    r = jax.nn.sigmoid(xt[:, :hsz] + hh[:, :hsz])
    z = jax.nn.sigmoid(xt[:, hsz:2 * hsz] + hh[:, hsz:2 * hsz])
    n = jnp.tanh(xt[:, 2 * hsz:] + r * hh[:, 2 * hsz:])
    new = (1.0 - z) * n + z * h
    return jnp.where(m[:, None] > 0, new, h), (new, h, r, z, n, hh[:, 2 * hsz:])

  h0 = jnp.zeros((xp.shape[1], hsz), xp.dtype)
  final, (ys, hs, r, z, n, hn) = jax.lax.scan(body, h0, (xp, ms), unroll=unroll)
  return (ys, final), (hs, r, z, n, hn, u, ms)


def _gru_vjp_bwd(unroll, res, g):
  hs, r, z, n, hn, u, ms = res
  gys, gfin = g

  def body(dh, inp):
    gy, m, h, r, z, n, hn = inp
    keep = m[:, None] > 0
    dnew = gy + jnp.where(keep, dh, 0.0)
    dn = dnew * (1.0 - z)
    dh = jnp.where(keep, 0.0, dh) + dnew * z
    dan = dn * (1.0 - n * n)
    dar = dan * hn * r * (1.0 - r)
    daz = dnew * (h - n) * z * (1.0 - z)
    dhh = jnp.concatenate([dar, daz, dan * r], -1)
    return dh + dhh @ u.T, (jnp.concatenate([dar, daz, dan], -1), dhh)

  _, (dxp, dhh) = jax.lax.scan(body, gfin, (gys, ms, hs, r, z, n, hn), reverse=True,
                               unroll=unroll)
  return dxp, jnp.einsum("tbh,tbg->hg", hs, dhh), dhh.sum((0, 1)), None


_gru_vjp_scan.defvjp(_gru_vjp_fwd, _gru_vjp_bwd)


def gru_hoisted_vjp(mask, unroll=1):
  """Hoisted projection; hand-written backward scan; ``dU`` as one product after it."""

  def fn(p, x):
    w, bi = p["input"]["kernel"], p["input"]["bias"]
    xp = jnp.swapaxes(x, 0, 1) @ w + bi
    ys, final = _gru_vjp_scan(xp, p["w_hidden"], p["b_hidden"], mask.T, unroll)
    return jnp.swapaxes(ys, 0, 1), final

  return fn


# -- LSTM ------------------------------------------------------------------------------


def lstm_hoisted(mask, keep="where", unroll=1):

  def fn(p, x):
    w, bi, u, bh = p["input"]["kernel"], p["input"]["bias"], p["w_hidden"], p["b_hidden"]
    xp = jnp.swapaxes(x @ w + bi, 0, 1)

    def body(carry, inp):
      c, h = carry
      xt, m = inp
      nc, nh = _lstm_new(xt + h @ u + bh, c)
      return (_keep(keep, m, nc, c), _keep(keep, m, nh, h)), nh

    zeros = jnp.zeros((x.shape[0], u.shape[0]))
    final, ys = _scan(body, (zeros, zeros), (xp, mask.T), unroll, False)
    return jnp.swapaxes(ys, 0, 1), final

  return fn


def lstm_inloop(mask, keep="where", unroll=1, remat=False, cat=False):
  """``cat``: one ``[x_t; h] [W; U]`` product per step instead of two."""

  def fn(p, x):
    w, bi, u, bh = p["input"]["kernel"], p["input"]["bias"], p["w_hidden"], p["b_hidden"]
    wu = jnp.concatenate([w, u], 0) if cat else None

    def body(carry, inp):
      c, h = carry
      xt, m = inp
      if cat:
        gates = jnp.concatenate([xt, h], -1) @ wu + (bi + bh)
      else:
        gates = (xt @ w + bi) + (h @ u + bh)
      nc, nh = _lstm_new(gates, c)
      return (_keep(keep, m, nc, c), _keep(keep, m, nh, h)), nh

    zeros = jnp.zeros((x.shape[0], u.shape[0]))
    final, ys = _scan(body, (zeros, zeros), (jnp.swapaxes(x, 0, 1), mask.T), unroll, remat)
    return jnp.swapaxes(ys, 0, 1), final

  return fn


# -- BiGRU -----------------------------------------------------------------------------


def bigru_two_scans(mask, hoisted=False):
  if hoisted:  # the layer before issue 24
    fwd, bwd = gru_hoisted(mask), gru_hoisted(mask, reverse=True)
  else:
    fwd, bwd = gru_inloop(mask), gru_inloop(mask, reverse=True)

  def fn(p, x):
    fo, fh = fwd(p["fwd_0"], x)
    bo, bh = bwd(p["bwd_0"], x)
    return jnp.concatenate([fo, bo], -1), jnp.concatenate([fh, bh], -1)

  return fn


def bigru_one_scan(mask):
  """Both directions in one scan body: step ``s`` reads ``x[s]`` and ``x[T-1-s]``."""

  def fn(p, x):
    pf, pb = p["fwd_0"], p["bwd_0"]
    xs = jnp.swapaxes(x, 0, 1)
    ms = mask.T

    def one(q, h, xt, m):
      new = _gru_new(xt @ q["input"]["kernel"] + q["input"]["bias"],
                     h @ q["w_hidden"] + q["b_hidden"], h)
      return jnp.where(m[:, None] > 0, new, h), new

    def body(carry, inp):
      hf, hb = carry
      xf, mf, xb, mb = inp
      hf, yf = one(pf, hf, xf, mf)
      hb, yb = one(pb, hb, xb, mb)
      return (hf, hb), (yf, yb)

    zeros = jnp.zeros((x.shape[0], pf["w_hidden"].shape[0]))
    (hf, hb), (yf, yb) = jax.lax.scan(body, (zeros, zeros), (xs, ms, xs[::-1], ms[::-1]))
    ys = jnp.concatenate([yf, yb[::-1]], -1)
    return jnp.swapaxes(ys, 0, 1), jnp.concatenate([hf, hb], -1)

  return fn


# -- the rows --------------------------------------------------------------------------


def _flax_rows(cell_fn, x, lengths, bidirectional=False):
  rows = {}
  seq = jnp.asarray(lengths, jnp.int32)
  if bidirectional:
    model = nn.Bidirectional(nn.RNN(cell_fn()), nn.RNN(cell_fn()), return_carry=True)
  else:
    model = nn.RNN(cell_fn(), return_carry=True)
  params = model.init(jax.random.key(0), x)["params"]
  for name, use in (("flax", False), ("flax_len", True)):

    def fn(p, xs, use=use):
      final, ys = model.apply({"params": p}, xs, seq_lengths=seq if use else None)
      return ys, final

    rows[name] = (params, fn)
  return rows


def rows(layer: str, x, mask, lengths, hidden: int) -> dict:
  """``{row name: (params, fn)}`` for ``layer`` in ``gru``, ``lstm``, ``bigru``."""
  if layer == "gru":
    mod = rnn.GRU(hidden)
    params = mod.init(jax.random.key(0), x, mask)["params"]
    out = {"vedgan": (params, lambda p, xs: mod.apply({"params": p}, xs, mask))}
    out.update(_flax_rows(lambda: nn.GRUCell(hidden), x, lengths))
    variants = {
        "hoisted": gru_hoisted(mask), "hoisted_arith": gru_hoisted(mask, "arith"),
        "hoisted_vjp": gru_hoisted_vjp(mask), "inloop": gru_inloop(mask),
        "inloop_arith": gru_inloop(mask, "arith"), "inloop_split": gru_inloop(mask, split=True),
        "inloop_remat": gru_inloop(mask, remat=True),
    }
    variants.update({f"inloop_unroll{k}": gru_inloop(mask, unroll=k) for k in (2, 4, 8)})
  elif layer == "lstm":
    mod = rnn.LSTM(hidden)
    params = mod.init(jax.random.key(0), x, mask)["params"]
    out = {"vedgan": (params, lambda p, xs: mod.apply({"params": p}, xs, mask))}
    out.update(_flax_rows(lambda: nn.OptimizedLSTMCell(hidden), x, lengths))
    out["flax_lstmcell"] = _flax_rows(lambda: nn.LSTMCell(hidden), x, lengths)["flax"]
    variants = {
        "hoisted": lstm_hoisted(mask), "hoisted_arith": lstm_hoisted(mask, "arith"),
        "inloop": lstm_inloop(mask), "inloop_arith": lstm_inloop(mask, "arith"),
        "inloop_cat": lstm_inloop(mask, cat=True), "inloop_remat": lstm_inloop(mask, remat=True),
    }
    variants.update({f"inloop_unroll{k}": lstm_inloop(mask, unroll=k) for k in (2, 4, 8)})
  elif layer == "bigru":
    mod = rnn.BiGRU(hidden)
    params = mod.init(jax.random.key(0), x, mask)["params"]
    out = {"vedgan": (params, lambda p, xs: mod.apply({"params": p}, xs, mask))}
    out.update(_flax_rows(lambda: nn.GRUCell(hidden), x, lengths, bidirectional=True))
    variants = {"hoisted": bigru_two_scans(mask, hoisted=True),
                "two_scans": bigru_two_scans(mask), "one_scan": bigru_one_scan(mask)}
  else:
    raise SystemExit(f"unknown layer {layer!r} (gru, lstm, bigru)")
  out.update({k: (params, v) for k, v in variants.items()})
  return out


def check_rows(layer: str = "gru", hidden: int = 8) -> None:
  """Every pure-function row computes the layer's values and gradients (float32 tolerance)."""
  rng = np.random.default_rng(0)
  b, t = 3, 5
  x = jnp.asarray(rng.normal(size=(b, t, 4)), f32)
  lengths = np.array([t, 3, 1])
  mask = jnp.asarray(np.arange(t)[None, :] < lengths[:, None], f32)
  table = rows(layer, x, mask, lengths, hidden)
  params, ref = table["vedgan"]
  params = jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.normal(size=a.shape), f32), params)
  want = jax.value_and_grad(loss_of(ref, mask), (0, 1))(params, x)
  for name, (p, fn) in table.items():
    if name.startswith("flax"):
      continue
    got = jax.jit(jax.value_and_grad(loss_of(fn, mask), (0, 1)))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got, want)
    print(f"{layer}/{name}: equal to the layer")


if __name__ == "__main__":
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description="Checks that every formulation row equals the layer (values, gradients).")
  parser.add_argument("--layers", default="gru,lstm,bigru", help="comma list of gru, lstm, bigru")
  for name in parser.parse_args().layers.split(","):
    check_rows(name)
