"""The schedule, the optimizers and the time budget of a run.

Optimizers (as in the authors' code): Adam on every parameter except the bottleneck's
`quantiles`, with global-norm clipping of its gradients and the paper's step decay; a
separate Adam on `quantiles` driven by the auxiliary loss only.

The main learning rate is an argument of the step, computed on the host from `BudgetPlan`,
not a schedule inside the optimizer (`optax.inject_hyperparams`): a run fitted to a
wall-clock budget learns how many steps fit, and so where its decays fall, only from the
compiled step's measured time, after the state and the step exist. A schedule inside the
optimizer is fixed when the step is traced; moving it would mean recompiling, or feeding the
fitted length into the step anyway. Keeping Adam's state free of injected hyperparameters
also keeps the optimizer state's tree, so existing checkpoints restore.
"""

from __future__ import annotations

import dataclasses
import logging

import flax
import jax
import optax

from tgic_jax.config import OptimConfig, RunConfig
from tgic_jax.model.layers import Params
from tgic_jax.train import distributed
from tgic_jax.train.metrics_writer import announce

QUANTILES = ("entropy_bottleneck", "quantiles")


# ----------------------------------------------------------------------------- schedule
def global_batch_size(run, num_devices: int) -> int:
    """Global batch = input.batch_size_per_device x devices in the mesh.

    `run`: a RunConfig, or the ConfigDict it is read from (typed here, at the boundary).
    """
    return int(RunConfig.from_config(run).input.batch_size_per_device) * int(num_devices)


def steps_per_epoch(optim_config, global_batch: int) -> int:
    """epoch_pairs // global batch (at least 1)."""
    return max(1, int(OptimConfig.from_config(optim_config).epoch_pairs) // int(global_batch))


def with_epoch_size(run, num_pairs: int) -> RunConfig:
    """`run` (a RunConfig or its ConfigDict) whose epoch (optim.epoch_pairs) is the data's
    counted number of pairs."""
    run = RunConfig.from_config(run)
    configured = int(run.optim.epoch_pairs)
    if configured > 0 and configured != num_pairs:
        logging.warning(
            "optim.epoch_pairs=%d, the data has %d pairs: using the data's count",
            configured,
            num_pairs,
        )
    optim_config = dataclasses.replace(run.optim, epoch_pairs=int(num_pairs))
    return dataclasses.replace(run, optim=optim_config)


def total_steps(run, global_batch: int) -> int:
    """run.total_steps when set (> 0), else epochs x steps per epoch (`run`: a RunConfig or
    its ConfigDict)."""
    run = RunConfig.from_config(run)
    if run.total_steps is not None and int(run.total_steps) > 0:
        return int(run.total_steps)
    return int(run.optim.epochs) * steps_per_epoch(run.optim, global_batch)


def decay_steps(optim_config, global_batch: int, num_steps: int | None = None) -> list[int]:
    """The steps where the learning rate drops: decay_epochs x steps per epoch.

    With `num_steps` (a run fitted to a wall-clock budget), each decay falls at the same
    fraction of num_steps as the epoch schedule puts it (45/50 and 48/50 for the paper), so a
    shortened run still ends annealed.
    """
    optim_config = OptimConfig.from_config(optim_config)
    spe = steps_per_epoch(optim_config, global_batch)
    steps = [int(e) * spe for e in optim_config.decay_epochs]
    if num_steps is None:
        return steps
    planned = max(1, int(optim_config.epochs) * spe)
    return [round(s * int(num_steps) / planned) for s in steps]


def learning_rate_schedule(
    optim_config, global_batch: int, num_steps: int | None = None
) -> optax.Schedule:
    """Constant learning_rate, x decay_factor at each of `decay_steps`."""
    optim_config = OptimConfig.from_config(optim_config)
    factor = float(optim_config.decay_factor)
    boundaries = {}
    for s in decay_steps(optim_config, global_batch, num_steps):
        boundaries[s] = boundaries.get(s, 1.0) * factor
    return optax.piecewise_constant_schedule(float(optim_config.learning_rate), boundaries)


# ----------------------------------------------------------------------------- optimizer
def param_labels(params: Params) -> Params:
    """'aux' for the bottleneck quantiles, 'main' for every other parameter."""
    flat = flax.traverse_util.flatten_dict(params)
    labels = {k: "aux" if k[-2:] == QUANTILES else "main" for k in flat}
    return flax.traverse_util.unflatten_dict(labels)


def make_optimizer(optim_config) -> optax.GradientTransformation:
    """Main Adam (clipped) on all but quantiles; aux Adam on quantiles only.

    The main learning rate is not inside: the step scales the main updates by the value the
    host passes in (`apply_learning_rate`); see the module docstring for why.
    """
    main = optax.chain(
        optax.clip_by_global_norm(float(optim_config.grad_clip_norm)), optax.scale_by_adam()
    )
    aux = optax.adam(float(optim_config.aux_learning_rate))
    return optax.multi_transform({"main": main, "aux": aux}, param_labels)


def apply_learning_rate(updates: Params, learning_rate: jax.Array) -> Params:
    """Main updates x -learning_rate (the step of Adam); the aux updates already carry theirs."""
    flat = flax.traverse_util.flatten_dict(updates)
    for k in flat:
        if k[-2:] != QUANTILES:
            flat[k] = flat[k] * -learning_rate
    return flax.traverse_util.unflatten_dict(flat)


# ----------------------------------------------------------------------------- budget
class BudgetPlan:
    """Fits the run to `train_time_limit_minutes` so that it still ends annealed.

    The decays sit at fractions of the run (`decay_steps` with num_steps), so the plan only
    has to know how many steps fit. It measures the step time after compilation and
    re-estimates the remaining steps until the first decay (before it the learning rate is
    constant, so moving the end is free); from then on the length is fixed. Every host uses
    process 0's estimate, so all stop at the same step. Without a budget, or when the whole
    schedule fits, the run is the configured one.
    """

    SAFETY = 0.95  # fraction of the measured time left that steps may use (saves, log lines)
    RESERVE_S = 5.0  # the final checkpoint

    def __init__(
        self, optim_config, global_batch: int, num_steps: int, budget_s: float, begun: float
    ):
        self.optim_config, self.global_batch = optim_config, global_batch
        self.planned, self.num_steps = num_steps, num_steps
        self.budget_s, self.begun = budget_s, begun
        self.fitted = False
        self._t0 = self._step0 = None
        self._schedule = learning_rate_schedule(optim_config, global_batch)

    def learning_rate(self, step: int) -> float:
        """The main learning rate of `step` under the current plan."""
        return float(self._schedule(step))

    def _first_decay(self) -> int:
        steps = decay_steps(self.optim_config, self.global_batch, self.num_steps)
        return min(steps, default=self.num_steps)

    def measuring(self, step: int) -> bool:
        """Whether the plan still needs the time of `step` (a budget, before the first decay)."""
        return bool(self.budget_s) and step < self._first_decay()

    def observe(self, step: int, now: float) -> None:
        """Called after `step` steps are done (their results ready): re-plans the length."""
        if not self.measuring(step):
            return
        if self._t0 is None:  # the first step after compile is not representative
            self._t0, self._step0 = now, step
            return
        done = step - self._step0
        if done < 3 or (done > 10 and done % 10):  # steps 3-10, then every 10th
            return
        seconds_per_step = (now - self._t0) / done
        left = self.budget_s - (now - self.begun) - self.RESERVE_S
        fit = step + max(0, int(self.SAFETY * left / seconds_per_step))
        fit = distributed.agree_on_int(min(fit, self.planned))
        if fit != self.num_steps:
            self.num_steps, self.fitted = fit, fit < self.planned
            scaled = self.num_steps if self.fitted else None
            self._schedule = learning_rate_schedule(self.optim_config, self.global_batch, scaled)
            decays = decay_steps(self.optim_config, self.global_batch, scaled)
            announce(f"time budget: {fit} steps fit, decays at {decays}")
