"""Losses of the five papers as pure, per-example functions.

Every function here is a pure function of arrays (jax and numpy only), safe
under ``jax.jit``, ``jax.vmap`` and ``jax.grad``, in the style of ``optax``
losses and ``rlax`` policy gradients:

* outputs are **per example** (per sequence, per latent vector, ...); the call
  site reduces them (mean over the batch, ``lax.pmean`` across devices, ...);
* masks are **explicit** arguments: ``mask[..., t]`` is 1 (or True) for a real
  token and 0 (or False) for padding. Masked positions are excluded with
  ``jnp.where``, so whatever sits there (padding ids, ``-inf`` log-probs, NaN)
  cannot leak into the value. Non-binary masks act as per-token weights;
* sums, not means, over time: :func:`sequence_cross_entropy` also returns token
  counts so that a mean over tokens stays exact under data parallelism
  (``psum(nll_sum) / psum(count)``).

Shapes: ``B`` batch, ``T`` time, ``V`` vocabulary, ``D`` latent size; ``...``
stands for any leading axes.

The functions are wrapped in ``jax.jit`` (flags such as ``mode`` and
``non_saturating`` are static), so a call outside ``jit`` compiles once per
input shape instead of dispatching op by op; inside your own ``jit``,
``vmap`` or ``grad`` they trace like any other jax function. Softmaxes and
sigmoids run in at least float32.

Paper names used in docstrings: *MojiTalk* (Zhou & Wang 2018, supplement),
*HappyBot* (Shin et al. 2019), *collaborative VED* (Shen et al.),
*latent-space GAN* (Kojima et al.), *dialogue GAN* (Lopez Zorrilla et al.,
top-k softmax).
"""
# One module per family of losses; every public function is importable from here.
from vedgan.losses.gan import *  # noqa: F401,F403
from vedgan.losses.gan import __all__ as _gan
from vedgan.losses.latent import *  # noqa: F401,F403
from vedgan.losses.latent import __all__ as _latent
from vedgan.losses.rl import *  # noqa: F401,F403
from vedgan.losses.rl import __all__ as _rl
from vedgan.losses.sequence import *  # noqa: F401,F403
from vedgan.losses.sequence import __all__ as _sequence

__all__ = [*_sequence, *_latent, *_rl, *_gan]
