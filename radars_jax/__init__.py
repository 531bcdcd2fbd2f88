"""radars_jax: memory-budgeted differentiable NAS (RADARS) in JAX."""

__version__ = "0.1.0"
