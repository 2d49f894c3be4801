"""Moved to `tgic_jax.train.lifecycle.finite_watch`; this path keeps old imports working."""

from tgic_jax.train.lifecycle.finite_watch import WATCHED, NonFiniteError, NonFiniteWatch  # noqa: F401
