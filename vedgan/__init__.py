"""vedgan: latent-variable, adversarial and RL text generation in JAX/Flax.

Submodules are imported on demand so that ``from vedgan import losses`` pulls in
only jax/numpy and never the Flax models or the data stack.
"""
__version__ = "0.1.0"
