"""A non-finite loss or gradient stops the run before anything non-finite is saved.

Once a step's loss, gradient norm or aux loss is not finite its update is not either, and
it stays so: training on would save non-finite checkpoints that rotate the good ones out
(`ckpt.keep`).

Reading each step's metrics at once would wait for the device every step; instead the
watch keeps each step's scalars (device arrays, no transfer) and reads them all where the
loop reads metrics anyway (a log line) and before every save and evaluation, so a
non-finite step is always found before its state could be written.
"""

from __future__ import annotations

import math

import jax

from tgic_jax.train.lifecycle.errors import RunError

WATCHED = ("loss", "grad_norm", "aux_loss")


class NonFiniteError(RunError):
    """A step's loss, gradient norm or aux loss is NaN or infinite."""

    def __init__(self, step: int, values: dict[str, float]):
        self.step, self.values = step, values
        shown = " ".join(f"{k}={v}" for k, v in values.items())
        super().__init__(f"step {step}: {shown} is not finite")


class NonFiniteWatch:
    """Collects the watched metrics of every step; `check` raises at the first bad one."""

    def __init__(self):
        self._pending: list[tuple[int, dict]] = []

    def add(self, step: int, metrics: dict) -> None:
        """Remembers step's watched metrics (no device sync)."""
        self._pending.append((step, {k: metrics[k] for k in WATCHED if k in metrics}))

    def check(self) -> None:
        """Reads the steps added since the last check; NonFiniteError at the first bad one."""
        pending, self._pending = jax.device_get(self._pending), []
        for step, values in pending:
            bad = {k: float(v) for k, v in values.items() if not math.isfinite(float(v))}
            if bad:
                raise NonFiniteError(step, bad)
