"""vedgan.nn.dense.Dense: flax's Dense, computed as one [N, K] product at any rank."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan.nn.dense import Dense


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5), (2, 2, 3, 5)])
def test_same_parameters_values_and_gradients_as_flax_dense(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  ours, flax_dense = Dense(7, name="out"), nn.Dense(7, name="out")
  params = ours.init(jax.random.key(1), x)
  reference = flax_dense.init(jax.random.key(1), x)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), reference)
  jax.tree.map(np.testing.assert_array_equal, params, reference)

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  y, ref_y = ours.apply(params, x), flax_dense.apply(params, x)
  assert y.shape == shape[:-1] + (7,)
  np.testing.assert_allclose(y, ref_y, rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda p, x: loss(ours, p, x), argnums=(0, 1))(params, x)
  ref_grads = jax.grad(lambda p, x: loss(flax_dense, p, x), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads, ref_grads)


def test_a_rank_3_input_is_one_rank_2_product_forward_and_backward():
  """The point of the layer: no dot_general on a rank-3 operand, so the kernel's gradient
  is an ordinary [K, N] x [N, F] product (XLA:CPU runs the rank-3 form far slower)."""
  x = jnp.ones((4, 6, 5))
  layer = Dense(3)
  params = layer.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2)))(params)
  ranks = [tuple(v.aval.ndim for v in eqn.invars) for eqn in jaxpr.jaxpr.eqns
           if eqn.primitive.name == "dot_general"]
  assert ranks and all(r == (2, 2) for r in ranks), ranks
