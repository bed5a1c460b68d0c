"""vedgan.nn.rnn after issue 24: the parameter trees are those of the hoisted layers, and the
input projection runs inside the scan.

The layers' values and gradients are compared with the textbook cells in
``tests/test_rnn.py``; here:

* the ``init`` parameter tree of every layer (names, shapes, dtypes) and its
  initial values (``sum |w|`` per leaf) equal the ones the layers built before the
  per-step projection (recorded from the code at e120099 as literals below), so
  checkpoints and long runs written before it still load and a seed still gives
  the same initial weights;
* ``__call__`` has no matmul outside its ``lax.scan`` (the per-step formulation:
  no ``[B, T, kH]`` projection of the whole sequence), and one input and one
  hidden matmul inside it.

Time budget: about 3 s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vedgan.nn.rnn import BiGRU, GRU, LSTM

X = jnp.ones((3, 5, 5))
MASK = jnp.ones((3, 5))

_GRU = {"b_hidden": ((12,), 0.0), "input/bias": ((12,), 0.0),
        "input/kernel": ((5, 12), 23.12232), "w_hidden": ((4, 12), 12.15124)}
_LSTM = {"b_hidden": ((16,), 0.0), "input/bias": ((16,), 0.0),
         "input/kernel": ((5, 16), 29.05087), "w_hidden": ((4, 16), 13.80373)}
_BIGRU = {
    "bwd_0/b_hidden": ((12,), 0.0), "bwd_0/input/bias": ((12,), 0.0),
    "bwd_0/input/kernel": ((5, 12), 18.97854), "bwd_0/w_hidden": ((4, 12), 10.89305),
    "bwd_1/b_hidden": ((12,), 0.0), "bwd_1/input/bias": ((12,), 0.0),
    "bwd_1/input/kernel": ((8, 12), 28.73727), "bwd_1/w_hidden": ((4, 12), 10.7499),
    "fwd_0/b_hidden": ((12,), 0.0), "fwd_0/input/bias": ((12,), 0.0),
    "fwd_0/input/kernel": ((5, 12), 21.65081), "fwd_0/w_hidden": ((4, 12), 10.94794),
    "fwd_1/b_hidden": ((12,), 0.0), "fwd_1/input/bias": ((12,), 0.0),
    "fwd_1/input/kernel": ((8, 12), 31.15062), "fwd_1/w_hidden": ((4, 12), 11.71203),
}


def _tree(params):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(k.key for k in path): v for path, v in flat}


@pytest.mark.parametrize("layer,want", [
    (GRU(4), _GRU), (GRU(4, dtype=jnp.bfloat16), _GRU), (LSTM(4), _LSTM),
    (LSTM(4, dtype=jnp.bfloat16, remat=True), _LSTM), (BiGRU(4, num_layers=2), _BIGRU),
], ids=["gru", "gru-bf16", "lstm", "lstm-bf16-remat", "bigru-2"])
def test_init_param_tree_is_unchanged(layer, want):
  """Names, shapes, float32 dtypes and initial values of the tree the layers built at e120099."""
  got = _tree(layer.init(jax.random.key(0), X, MASK)["params"])
  assert sorted(got) == sorted(want)
  for name, (shape, abs_sum) in want.items():
    assert got[name].shape == shape and got[name].dtype == jnp.float32, name
    np.testing.assert_allclose(float(np.abs(np.asarray(got[name], np.float64)).sum()), abs_sum,
                               rtol=1e-6, atol=1e-6, err_msg=name)


def _count(jaxpr, name):
  """Equations called ``name`` in ``jaxpr`` and in the calls nested in it (``jnp.where`` is one)."""
  n = 0
  for e in jaxpr.eqns:
    n += e.primitive.name == name
    inner = e.params.get("jaxpr")
    if inner is not None and e.primitive.name != "scan":
      n += _count(getattr(inner, "jaxpr", inner), name)
  return n


def _dots(jaxpr):
  return [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]


@pytest.mark.parametrize("cls", [GRU, LSTM])
@pytest.mark.parametrize("use_mask", [False, True])
def test_input_projection_runs_inside_the_scan(cls, use_mask):
  """No matmul before the scan; the scan body holds the input and the hidden matmul."""
  layer = cls(4)
  params = layer.init(jax.random.key(0), X)["params"]
  jaxpr = jax.make_jaxpr(lambda p: layer.apply({"params": p}, X, MASK if use_mask else None))(
      params).jaxpr
  assert not _dots(jaxpr)
  scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1
  body = scans[0].params["jaxpr"].jaxpr
  assert [e.outvars[0].aval.shape for e in _dots(body)] == [(3, layer.features * (
      3 if cls is GRU else 4))] * 2
  # without a mask the body selects nothing; with one, one select per carry array
  n_select = _count(body, "select_n")
  assert n_select == (0 if not use_mask else (1 if cls is GRU else 2))
