"""vedgan: latent-variable, adversarial and RL text generation in JAX/Flax.

Submodules are imported on demand so that ``from vedgan import losses`` pulls in
only jax/numpy and never the Flax models or the data stack.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
  """``vedgan.load_exported``: imported from :mod:`vedgan.export` on first use."""
  if name == "load_exported":
    from vedgan.export import load_exported  # pylint: disable=import-outside-toplevel
    return load_exported
  raise AttributeError(f"module 'vedgan' has no attribute {name!r}")
