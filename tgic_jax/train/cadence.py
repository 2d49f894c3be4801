"""When a periodic job of the training loop runs: one rule for every "is it time".

Logging, checkpoints, per-epoch evaluation and the time budget's check each run every N
steps, or every N epochs, converted to steps once from the epoch's length; some also run
at the run's last step (big_vision's `u.itstime` idea). Counting is by the global step
after it is done (1 is the first), so a resumed run keeps the same beat.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Cadence:
    """Due after every step that a period divides, and after the last step when `at_last`.

    `periods` are in steps, each > 0; none means never (nor at the last step).
    """

    periods: tuple[int, ...] = ()
    at_last: bool = False

    @classmethod
    def every(
        cls, steps: int = 0, epochs: int = 0, steps_per_epoch: int = 1, at_last: bool = False
    ) -> Cadence:
        """Every `steps` steps and every `epochs` epochs (0: not by that count), in steps.

        `at_last` also makes it due at the last step, provided it is due at all.
        """
        periods = tuple(p for p in (int(steps), int(epochs) * int(steps_per_epoch)) if p > 0)
        return cls(periods, bool(at_last and periods))

    def due(self, step: int, last_step: int | None = None) -> bool:
        """Whether the job runs after `step` (1-based) of a run that ends at `last_step`."""
        if any(step % p == 0 for p in self.periods):
            return True
        return self.at_last and step == last_step
