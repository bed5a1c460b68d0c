"""``chex.variants`` with an op-by-op ``without_jit``, for the pure loss and relaxation tests.

chex's ``without_jit`` variant only leaves the test's own function unjitted; the library
functions under test are ``jax.jit``-wrapped themselves, so they would still be traced.
:meth:`OpByOpTestCase.run_variant` runs the ``without_jit`` variant under
``jax.disable_jit()`` instead: every Python line of the library then sees concrete values,
while the ``with_jit`` variant sees tracers for all of ``fn``'s arguments. A Python branch
on a value, or a value that must be static, then fails to trace under ``with_jit``; a
branch taken only for a concrete value (``label_smoothing == 0``) runs ``without_jit``.
Define ``fn`` once: called again with new values, the jitted variant reuses its program::

    class FloorTest(OpByOpTestCase):
      @chex.variants(with_jit=True, without_jit=True)
      def test_floor(self):
        floor = lambda a: losses.kl_threshold(kl, a)
        for alpha, want in ((5.0, [5.0, 7.0]), (4.0, [4.0, 7.0])):
          np.testing.assert_allclose(self.run_variant(floor, alpha), want)

The tests in ``tests/test_losses.py`` and ``tests/test_relax.py`` also vmap inside ``fn``
under ``with_jit`` only (``self.variant.type``), as their hand-written checks did: one
jitted program per test, and the op-by-op run stays cheap.
"""
import chex
import jax


class OpByOpTestCase(chex.TestCase):
  """A ``chex.TestCase`` whose tests call :meth:`run_variant`."""

  def run_variant(self, fn, *args, **variant_kwargs):
    """``fn(*args)`` under this test's variant: jitted (``with_jit``, ``args`` traced;
    ``variant_kwargs`` such as ``static_argnums`` go to ``jax.jit``) or op by op
    (``without_jit``)."""
    wrapped = self.variant(fn, **variant_kwargs)
    if self.variant.type == chex.ChexVariantType.WITHOUT_JIT:
      with jax.disable_jit():
        return wrapped(*args)
    return wrapped(*args)
