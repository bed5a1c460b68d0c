"""``Dense``: ``flax.linen.Dense`` computed as one ``[N, K] x [K, F]`` product at any rank.

Shapes: ``x[..., K]`` -> ``y[..., F]``; ``N`` is the product of the leading axes.
"""
from __future__ import annotations

import flax.linen as nn
import jax


class Dense(nn.Dense):
  """``flax.linen.Dense`` over the last axis, run on the input flattened to ``[N, K]`` and
  reshaped back: the same parameters (names, shapes, initial values) and the same values.

  Why: on a ``[B, T, K]`` input ``nn.Dense`` contracts the last axis of a rank-3 array, and
  the gradient of its kernel contracts ``B`` and ``T`` of two rank-3 arrays, which XLA:CPU
  lowers as a transpose of the ``[B, T, F]`` output gradient followed by a product with a
  transposed operand that runs far below the matmul peak. At issue 24's seq2seq sizes
  (B 64, T 30, H 256, V 8000) the output layer's kernel gradient took 455 ms and the
  transpose 100 ms of a 1.5 s step (``benchmarks/step_profile.py``); on the flattened input
  the same gradient is one ordinary product and the whole step ran 1.34x faster on one
  core (1,443 -> 1,074 ms against PyTorch's 968; docs/benchmarks.md).
  """

  def __call__(self, inputs: jax.Array) -> jax.Array:
    if inputs.ndim <= 2:
      return super().__call__(inputs)
    leading = inputs.shape[:-1]
    out = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
    return out.reshape(*leading, out.shape[-1])
