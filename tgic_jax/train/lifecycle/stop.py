"""When a run stops: SIGTERM, SIGINT (Ctrl-C) or its time budget, the same step on every host.

`StopAgreement.should_stop(step)` is asked before every step on every host and gives every
host the same answer, so all of them leave the loop after the same step and save it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import jax

from tgic_jax.train.cadence import Cadence
from tgic_jax.train.distributed import any_host

# Every host must leave the loop after the same step: one that stops early enters orbax's
# save (whose first barrier is a device collective) while the others wait in the next
# step's all-reduce, and both hang (measured: 2 processes, SIGTERM 2 s apart, no checkpoint
# after 100 s). Hence a SIGTERM is never acted on where it lands, but through JAX's
# preemption sync point, and the time budget through an all-gather.
BUDGET_CHECK_EVERY_STEPS = 10  # several hosts: one tiny all-gather per 10 steps


class _StopSignals:
    """SIGTERM and SIGINT (Ctrl-C) set a flag read between steps: save, then stop.

    Ctrl-C acts as a SIGTERM: the step ends, is saved, and the run stops; a second Ctrl-C
    quits at once. A KeyboardInterrupt raised wherever it lands would lose everything since
    the last checkpoint (up to 5,000 steps of configs/taco.py).
    With `jax.distributed` JAX owns SIGTERM (its preemption notice reaches every host), so
    SIGINT is passed on to it as a SIGTERM of this process and no SIGTERM handler is set.
    """

    def __init__(self, distributed: bool):
        self.received = ""
        self._distributed = distributed
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return
        sigs = (signal.SIGINT,) if distributed else (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:  # a second Ctrl-C is the usual KeyboardInterrupt
            signal.signal(signal.SIGINT, self._previous.pop(signal.SIGINT))
        print(
            f"{name}: saving the current step, then stopping"
            + (" (Ctrl-C again: quit without saving)" if signum == signal.SIGINT else ""),
            file=sys.stderr,
            flush=True,
        )
        self.received = self.received or name
        if self._distributed:
            os.kill(os.getpid(), signal.SIGTERM)

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class StopAgreement:
    """Whether to stop after a step, the same answer on every host: preemption or budget.

    With `jax.distributed` initialized, JAX's preemption sync manager owns SIGTERM (its
    notice reaches every host through the coordination service) and
    `manager.reached_preemption(step)` is True on all hosts at the same step, so no Python
    handler is installed (it would replace JAX's). Without it (one process) SIGTERM sets a
    local flag. The wall-clock budget (seconds from `begun`, 0: none) is decided by
    `any_host` every BUDGET_CHECK_EVERY_STEPS steps on several hosts, every
    step on one. `should_stop(step)` must be called at every step on every host.
    """

    def __init__(self, manager, budget_s: float = 0.0, begun: float | None = None):
        self._manager = manager
        self._budget_s = float(budget_s or 0.0)
        self._begun = time.perf_counter() if begun is None else begun
        self._signals = _StopSignals(jax.distributed.is_initialized())
        self._local = None if jax.distributed.is_initialized() else self._signals
        self._budget_due = Cadence.every(BUDGET_CHECK_EVERY_STEPS if jax.process_count() > 1 else 1)
        self.reason = ""

    def should_stop(self, step: int) -> bool:
        """True (on every host alike) when the run must checkpoint `step` and return."""
        if self._local is not None:
            preempted = self._local.received
        else:
            preempted = self._manager.reached_preemption(step)
        if preempted:
            self.reason = "SIGINT" if self._signals.received == "SIGINT" else "preemption"
            return True
        if self._budget_s and self._budget_due.due(step):
            over = time.perf_counter() - self._begun > self._budget_s
            if any_host(over):
                self.reason = "train_time_limit_minutes"
                return True
        return False

    def close(self) -> None:
        """Puts the previous signal handlers back."""
        self._signals.restore()
