"""Moved to `tgic_jax.train.lifecycle.signals`; this path keeps old imports working."""

from tgic_jax.train.lifecycle.signals import (  # noqa: F401
    SIGNALS,
    StartupSignals,
    read_sigaction,
    write_sigaction,
)
