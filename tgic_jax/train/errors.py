"""Moved to `tgic_jax.train.lifecycle.errors`; this path keeps old imports working."""

from tgic_jax.train.lifecycle.errors import ConfigError, Interrupted, RunError  # noqa: F401
