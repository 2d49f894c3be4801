"""Moved to `tgic_jax.train.lifecycle.lock`; this path keeps old imports working."""

from tgic_jax.train.lifecycle.lock import LOCK_FILE, WorkdirBusy, WorkdirLock  # noqa: F401
