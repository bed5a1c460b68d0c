"""Recurrent layers with fused gates (one input and one hidden matmul per step).

Every layer keeps its weights as plain parameters and runs its recurrence with
``jax.lax.scan`` over pure functions of those arrays, so the same layer serves a
whole teacher-forced sequence (``__call__``) and a single free-running step
(``step``), which decoders call inside their own scans.

``__call__`` projects each step's input inside the scan body (``x_t W + b``,
``[B, kH]``) instead of projecting the whole sequence before it: on CPU the
hoisted ``[T, B, kH]`` projection and its gradient are large arrays that leave the
cache, need zero-filled accumulators and transposes, and the elementwise fusion
that reads the hoisted array at a dynamic time index ran several times slower
than the same fusion on a per-step product. Measured side by side
(``benchmarks/rnn_layers.py``, docs/benchmarks.md, issue 24) the per-step form
is as fast as ``flax.linen.RNN`` with the stock cells; the numbers are the same
to float32 round-off.

Shapes: ``B`` batch, ``T`` time, ``D`` input features, ``H`` hidden units.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vedgan.nn.dense import Dense

Array = jax.Array


def _dense(x: Array, kernel: Array, bias: Array, dtype: Any) -> Array:
  """``x[..., D] @ kernel[D, N] + bias[N]`` in ``dtype``, as ``Dense(dtype=dtype)`` does."""
  return jnp.dot(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def _input_weights(module: nn.Module, x: Array) -> tuple[Array, Array]:
  """The ``input`` Dense's ``(kernel, bias)``, created first when initialising.

  The per-step scan body reads the arrays directly: calling the Dense inside
  ``lax.scan`` during ``init`` would create its parameters inside the trace.
  """
  if module.is_initializing():
    module.project_inputs(x[:, :1])
  params = module.input_proj.variables["params"]
  return params["kernel"], params["bias"]


def _masked_scan(step, carry, inputs, mask, reverse, unroll, remat=False):
  """Scans ``step`` over axis 1 of ``inputs``; rows whose ``mask`` is 0 keep their carry.

  Args:
    step: ``(carry, x_t[B, ...]) -> (carry, y_t[B, H])``, a pure function of its
      arguments and of arrays it closes over (the layer's weights).
    carry: pytree of ``[B, ...]`` arrays.
    inputs: ``[B, T, ...]``.
    mask: ``[B, T]`` (1 = real token) or None.
    reverse: scan from the last step to the first.
    unroll: ``lax.scan`` unroll factor.
    remat: wrap the scan body in ``jax.checkpoint``: the backward pass recomputes
      each step's gates from the saved carries instead of storing them, which
      cuts the activation memory of long sequences (about ``T * 3H`` or
      ``T * 4H`` floats per row) for one extra cell evaluation per step.

  Returns:
    (final carry, outputs ``[B, T, H]``).
  """
  xs = jnp.swapaxes(inputs, 0, 1)
  if mask is None:  # every step is real: no select per step
    body, scanned = step, xs
  else:
    scanned = (xs, jnp.swapaxes(mask, 0, 1).astype(xs.dtype))

    def body(c, xm):
      x, m = xm
      new_c, y = step(c, x)
      keep = lambda new, old: jnp.where(m[:, None] > 0, new, old)
      return jax.tree.map(keep, new_c, c), y

  if remat:
    body = jax.checkpoint(body)
  final, ys = jax.lax.scan(body, carry, scanned, reverse=reverse, unroll=unroll)
  return final, jnp.swapaxes(ys, 0, 1)


class GRU(nn.Module):
  """GRU layer (Cho et al. 2014) with the three gates fused into one matmul each.

  ``r = σ(x W_r + h U_r)``, ``u = σ(x W_u + h U_u)``,
  ``n = tanh(x W_n + r ⊙ (h U_n + b_hn))``, ``h' = (1 - u) ⊙ n + u ⊙ h``.

  Attributes:
    features: hidden size H.
    unroll: scan unroll factor.
    dtype: compute dtype of the matmuls (carries stay float32).
    remat: ``jax.checkpoint`` the scan body (see :func:`_masked_scan`).
  """
  features: int
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    h = self.features
    self.w_hidden = self.param("w_hidden", nn.initializers.orthogonal(), (h, 3 * h))
    self.b_hidden = self.param("b_hidden", nn.initializers.zeros, (3 * h,))
    self.input_proj = Dense(3 * h, dtype=self.dtype, name="input")

  def project_inputs(self, x: Array) -> Array:
    """``x[..., D] -> [..., 3H]``: the input half of all gates in one matmul."""
    return self.input_proj(x)

  def cell(self, h: Array, x_proj: Array) -> Array:
    """One step: ``h[B, H]``, ``x_proj[B, 3H]`` -> ``h'[B, H]`` (float32)."""
    hh = jnp.dot(h.astype(self.dtype), self.w_hidden.astype(self.dtype)) + self.b_hidden
    xr, xu, xn = jnp.split(x_proj.astype(jnp.float32), 3, axis=-1)
    hr, hu, hn = jnp.split(hh.astype(jnp.float32), 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    u = jax.nn.sigmoid(xu + hu)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - u) * n + u * h

  def step(self, h: Array, x: Array) -> Array:
    """Free-running step on raw inputs: ``h[B, H]``, ``x[B, D]`` -> ``h'[B, H]``."""
    return self.cell(h, self.project_inputs(x))

  def initial_state(self, batch_size: int) -> Array:
    return jnp.zeros((batch_size, self.features), jnp.float32)

  def __call__(self, x: Array, mask: Array | None = None, initial: Array | None = None,
               reverse: bool = False) -> tuple[Array, Array]:
    """Runs over a whole sequence.

    Args:
      x: ``[B, T, D]`` inputs.
      mask: ``[B, T]``; padded steps leave the state unchanged, so with
        right-padding the final state is the state after the last real token
        (and, with ``reverse=True``, the state after the first).
      initial: ``[B, H]`` initial state (zeros by default).
      reverse: run from ``T-1`` down to 0.

    Returns:
      ``(outputs[B, T, H], final[B, H])``.
    """
    if initial is None:
      initial = self.initial_state(x.shape[0])
    kernel, bias = _input_weights(self, x)

    def step(h, xt):
      h2 = self.cell(h, _dense(xt, kernel, bias, self.dtype))
      return h2, h2

    final, ys = _masked_scan(step, initial, x, mask, reverse, self.unroll, self.remat)
    return ys, final


class BiGRU(nn.Module):
  """Bidirectional (optionally stacked) GRU encoder.

  Returns the concatenation of the forward and backward outputs per layer and
  the final states of the top layer.
  """
  features: int
  num_layers: int = 1
  dropout: float = 0.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False):
    """``x[B, T, D]``, ``mask[B, T]`` -> ``(outputs[B, T, 2H], final[B, 2H])``."""
    outputs, final = x, None
    for layer in range(self.num_layers):
      if layer > 0 and self.dropout > 0:
        outputs = nn.Dropout(self.dropout)(outputs, deterministic=not train)
      fwd_out, fwd_h = GRU(self.features, self.unroll, self.dtype, self.remat,
                           name=f"fwd_{layer}")(outputs, mask)
      bwd_out, bwd_h = GRU(self.features, self.unroll, self.dtype, self.remat,
                           name=f"bwd_{layer}")(outputs, mask, reverse=True)
      outputs = jnp.concatenate([fwd_out, bwd_out], axis=-1)
      final = jnp.concatenate([fwd_h, bwd_h], axis=-1)
    return outputs, final


class LSTM(nn.Module):
  """LSTM layer (Hochreiter & Schmidhuber 1997) with the four gates fused into one matmul each.

  ``[i, f, g, o] = x W + h U + b``,
  ``c' = σ(f + forget_bias) ⊙ c + σ(i) ⊙ tanh(g)``, ``h' = σ(o) ⊙ tanh(c')``.

  The carry is the pair ``(c, h)``, both ``[B, H]`` float32. As in :class:`GRU`,
  ``__call__`` scans a known sequence (each step's input projected inside the
  scan body), and ``step`` is the single free-running step a decoder calls inside
  its own ``lax.scan``.

  Attributes:
    features: hidden size H.
    forget_bias: added to the forget gate's pre-activation (1.0, Jozefowicz et
      al. 2015, keeps early gradients flowing; 0.0 gives the plain cell).
    unroll: scan unroll factor.
    dtype: compute dtype of the matmuls (carries stay float32).
    remat: ``jax.checkpoint`` the scan body (see :func:`_masked_scan`).
  """
  features: int
  forget_bias: float = 1.0
  unroll: int = 1
  dtype: Any = jnp.float32
  remat: bool = False

  def setup(self):
    h = self.features
    self.w_hidden = self.param("w_hidden", nn.initializers.orthogonal(), (h, 4 * h))
    self.b_hidden = self.param("b_hidden", nn.initializers.zeros, (4 * h,))
    self.input_proj = Dense(4 * h, dtype=self.dtype, name="input")

  def project_inputs(self, x: Array) -> Array:
    """``x[..., D] -> [..., 4H]``: the input half of all gates in one matmul."""
    return self.input_proj(x)

  def cell(self, carry: tuple[Array, Array], x_proj: Array) -> tuple[Array, Array]:
    """One step: ``carry = (c, h)`` (each ``[B, H]``), ``x_proj[B, 4H]`` -> ``(c', h')``."""
    c, h = carry
    hh = jnp.dot(h.astype(self.dtype), self.w_hidden.astype(self.dtype)) + self.b_hidden
    gates = x_proj.astype(jnp.float32) + hh.astype(jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f + self.forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return c, h

  def step(self, carry: tuple[Array, Array], x: Array) -> tuple[Array, Array]:
    """Free-running step on raw inputs: ``(c, h)``, ``x[B, D]`` -> ``(c', h')``."""
    return self.cell(carry, self.project_inputs(x))

  def initial_state(self, batch_size: int) -> tuple[Array, Array]:
    zeros = jnp.zeros((batch_size, self.features), jnp.float32)
    return zeros, zeros

  def __call__(self, x: Array, mask: Array | None = None,
               initial: tuple[Array, Array] | None = None,
               reverse: bool = False) -> tuple[Array, tuple[Array, Array]]:
    """Runs over a whole sequence.

    Args:
      x: ``[B, T, D]`` inputs.
      mask: ``[B, T]``; padded steps leave the carry unchanged (their outputs
        are still computed and should be ignored).
      initial: ``(c, h)`` initial carry (zeros by default).
      reverse: run from ``T-1`` down to 0.

    Returns:
      ``(outputs h_t [B, T, H], final (c, h))``.
    """
    if initial is None:
      initial = self.initial_state(x.shape[0])
    kernel, bias = _input_weights(self, x)

    def step(carry, xt):
      carry = self.cell(carry, _dense(xt, kernel, bias, self.dtype))
      return carry, carry[1]

    final, ys = _masked_scan(step, tuple(initial), x, mask, reverse, self.unroll, self.remat)
    return ys, final
