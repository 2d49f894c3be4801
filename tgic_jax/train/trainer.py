"""Training: `train_and_evaluate(config, workdir)` is the whole run (train.py parses flags).

The loop reads top to bottom in labelled sections: mesh, model + loss, state (created or
restored), input, update step, budget, then per step: log, checkpoint, evaluate. Each job
lives in its own module: the schedule, optimizers and time budget in `optim`, the state in
`train_state`, the jitted update in `train_step`, per-epoch selection in `selection`,
metrics and notes in `metrics_writer`, hosts and barriers in `distributed`, start-up,
stopping and failure in `lifecycle`, saves and restores in `checkpoint`, a workdir -> an
inference checkpoint in `export`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import sys
import time

import jax
import ml_collections
import numpy as np
from etils import epath

from tgic_jax.checkpoints import inference
from tgic_jax.config import CkptConfig, RunConfig
from tgic_jax.model.taco import TACO, ModelConfig
from tgic_jax.train import (
    cadence,
    checkpoint,
    config_checks,
    distributed,
    input_pipeline,
    optim,
    selection,
    sharding,
    throughput,
    train_state,
    train_step,
)
from tgic_jax.train.export import (  # noqa: F401 - export_inference is imported from here too
    export_inference,
    load_workdir_config,
    write_workdir_config,
)
from tgic_jax.train.lifecycle.errors import ConfigError, Interrupted, RunError
from tgic_jax.train.lifecycle.finite_watch import NonFiniteError, NonFiniteWatch
from tgic_jax.train.lifecycle.lock import WorkdirLock
from tgic_jax.train.lifecycle.signals import StartupSignals
from tgic_jax.train.lifecycle.stop import StopAgreement
from tgic_jax.train.metrics_writer import MetricWriter, announce
from tgic_jax.train.train_state import TrainState


# ----------------------------------------------------------------------------- loop
def train_and_evaluate(
    config: ml_collections.ConfigDict | RunConfig, workdir: str | os.PathLike
) -> TrainState:
    """Trains (resuming from workdir's newest restorable checkpoint), evaluates, checkpoints.

    `config`: the run's ConfigDict (configs/*.py) or a `RunConfig`; typed once, here.

    `workdir` may be a URL (gs://bucket/run): checkpoints, config.json and TensorBoard
    events are written there, not to a local folder. One run at a time per workdir (a lock);
    a reason to stop that the user can act on raises a one-line `RunError`. Nothing is
    written to the workdir before the config, the mesh, the model's size and the inputs
    pass their checks, and config.json only once the first step is compiled, so a start
    that fails never blocks its corrected rerun.
    """
    begun = time.perf_counter()  # train_time_limit_minutes counts from here (compile included)
    workdir = inference.as_path(workdir)
    # Until the loop, SIGTERM and Ctrl-C end the process at once with one line: nothing is
    # trained yet, and the loop's handlers would only run after the minute-long compilation.
    startup = StartupSignals("stopping before the first step (nothing trained to save)")
    with startup:
        # The checks come before anything is written (the workdir included). From here on
        # every module takes its own section of the typed config, never the ConfigDict.
        run = config_checks.typed(config)
        try:
            mesh = sharding.make_mesh(run.mesh)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        global_batch = optim.global_batch_size(run, mesh.size)
        config_checks.validate(run, global_batch)
        config_checks.check_model_fits(run, global_batch)
        inputs = _checked_inputs(run.input)
        workdir.mkdir(parents=True, exist_ok=True)
        lock = WorkdirLock(workdir)
        if jax.process_index() == 0:
            lock.acquire()
        try:
            return _train(run, workdir, begun, mesh, startup, inputs)
        finally:
            lock.release()


def _checked_inputs(input_config):
    """(pairs or None, this host's folder items or None): the inputs listed and checked.

    Raises ConfigError (one line) when the input cannot train: a missing folder, no
    captioned image, no image as large as the crop. TFDS is checked when it is opened.
    """
    try:
        if input_pipeline.uses_pairs(input_config):
            return input_pipeline.list_pairs(input_config), None
        if input_config.source == "folder":
            items = input_pipeline.folder_items(
                input_config, jax.process_index(), jax.process_count()
            )
            return None, items
    except (OSError, ValueError) as err:  # FileNotFoundError, ImageError, caption errors
        raise ConfigError(f"input: {str(err).removeprefix('input: ')}") from None
    return None, None


def _train(run: RunConfig, workdir: epath.Path, begun: float, mesh, startup, inputs) -> TrainState:
    is_main = jax.process_index() == 0
    global_batch = optim.global_batch_size(run, mesh.size)
    host_batch = sharding.local_batch_size(global_batch, mesh)
    changes = config_checks.compare_with_workdir(run, workdir, devices=mesh.size)
    given = run  # what config.json records (the pair sources' epoch size is derived)
    model_config = ModelConfig.from_config(run.model)

    precision = run.jax_default_matmul_precision
    if precision:  # before anything is traced; see docs/RECIPE.md (numerics)
        jax.config.update("jax_default_matmul_precision", precision)
    if not run.loss.weights_confirmed:
        logging.warning(
            "loss.lmbda=%g: (k_p, k_j)=(%g, %g) are not confirmed by the authors",
            run.loss.lmbda,
            run.loss.k_p,
            run.loss.k_j,
        )

    # (image, caption) pair sources: the epoch is one pass over the pairs, counted here.
    pairs, items = inputs
    if pairs is not None:
        run = optim.with_epoch_size(run, len(pairs))
        announce(
            f"epoch: {len(pairs)} (image, caption) pairs, "
            f"{optim.steps_per_epoch(run.optim, global_batch)} steps"
        )
    num_steps = optim.total_steps(run, global_batch)

    # Model, loss, optimizer.
    from tgic_jax.train import losses  # heavy (LPIPS, transformers)

    model = TACO(model_config)
    text_encoder = input_pipeline.build_text_encoder(run.text, model_config.text_dim)
    clip_model, clip_text_fn = None, None
    if float(run.loss.k_j) > 0:  # validate: text.encoder is "clip"
        clip_model = losses.build_clip(run.loss.clip_path)
        clip_text_fn = functools.partial(losses.clip_text_embeddings, clip_model)
    loss_fn, frozen = losses.build_loss(run.loss, clip_model=clip_model)
    frozen = sharding.put_replicated({**frozen, "text": text_encoder.params}, mesh)
    optimizer = optim.make_optimizer(run.optim)

    # State: restored from the workdir's newest checkpoint that restores, else fresh.
    distributed.sync_hosts("tgic_jax/start")  # orbax's first barrier is a collective: meet first
    manager = _checkpoint_manager(run.ckpt, workdir)
    state, state_shardings, abstract = train_state.init_sharded_state(
        model, optimizer, int(run.seed), mesh, run.mesh
    )
    if manager.all_steps():
        del state
        state, manager = _resume(run.ckpt, workdir, manager, abstract)
    start_step = int(state.step)
    # Input: this host's share of every global batch, captions tokenized on the host.
    if pairs is not None:  # order from (seed, epoch): resumes exactly at start_step
        ds = input_pipeline.pairs_dataset(
            run.input,
            pairs,
            global_batch,
            host_batch,
            int(run.seed),
            start_step,
            jax.process_index(),
        )
    else:  # order from (seed, step) too: resumes exactly at start_step
        ds = input_pipeline.make_dataset(
            run.input,
            host_batch,
            seed=int(run.seed),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            start_step=start_step,
            items=items,
        )
    batches = input_pipeline.tokenize_batches(ds, text_encoder)

    # Update step.
    step_fn = train_step.jit_train_step(
        train_step.make_train_step(model, loss_fn, optimizer, text_encoder.apply, clip_text_fn),
        mesh,
        state_shardings,
    )
    # An optional wall-clock budget for the whole run (the demo's), compile included: the
    # plan fits the schedule into it (process 0's estimate on every host), and StopAgreement
    # stops every host at the same step should it still run out.
    budget_s = float(run.train_time_limit_minutes or 0) * 60
    plan = optim.BudgetPlan(run.optim, global_batch, num_steps, budget_s, begun)

    # Compile before the first step, then meet: hosts finish compiling minutes apart under
    # load, and the first collective would otherwise time out (see
    # `distributed.sync_hosts`). Batches are prepared and put on the devices 2 steps ahead,
    # in a thread.
    prefetch = throughput.Prefetcher(
        batches,
        functools.partial(sharding.make_global_batch, mesh),
        depth=int(run.input.prefetch_batches),
    )
    global_batches = prefetch
    if start_step < num_steps:
        announce(
            f"compiling the train step (about a minute on a CPU) for steps "
            f"{start_step + 1}-{num_steps} ..."
        )
        first = next(global_batches)
        step_fn = step_fn.lower(state, frozen, first, np.float32(0)).compile()
        global_batches = itertools.chain([first], global_batches)
    distributed.sync_hosts("tgic_jax/compiled")
    meter, profiler = _throughput_instruments(
        run.profile_steps, step_fn, global_batch, mesh, workdir
    )

    # The run's config is recorded once it has compiled: a start that fails earlier leaves
    # nothing that would refuse its corrected rerun.
    if is_main:
        config_checks.record_config(given, workdir, changes, devices=mesh.size)
    writer = MetricWriter(workdir / "tensorboard", enabled=is_main)
    startup.close()
    # From here SIGINT / SIGTERM save the current step, then stop.
    stop = StopAgreement(manager, budget_s, begun)
    log_every = max(1, int(run.log_every_steps))
    checkpoint_every = max(1, int(run.ckpt.every_steps))
    has_eval = bool(run.eval.folder)
    eval_every = int(run.eval.every_steps) if has_eval else 0
    spe = optim.steps_per_epoch(run.optim, global_batch)
    eval_epochs = int(run.eval.every_epochs) if has_eval else 0
    # One rule decides every "is it time" (`cadence`); the last step always logs and, when
    # the run evaluates at all, evaluates. Orbax saves whatever the loop asks (interval 1).
    log_due = cadence.Cadence.every(steps=log_every, at_last=True)
    checkpoint_due = cadence.Cadence.every(steps=checkpoint_every)
    eval_due = cadence.Cadence.every(eval_every, eval_epochs, spe, at_last=True)
    lpips_fn = None
    step = start_step
    last_metrics = None
    # Nothing non-finite is saved or evaluated: the watch reads every step's loss and
    # gradient norm at each log line and before each save and evaluation.
    finite = NonFiniteWatch()
    saves = checkpoint.SaveWatch(manager)
    eta = _Eta(start_step)
    meter.reset(step, prefetch.wait_s)
    try:
        # Checked before every step (the budget counts compile time; a run resumed after
        # preemption may be told to stop at once), the same answer on every host.
        while step < plan.num_steps and not stop.should_stop(step):
            profiler.before_step(step)
            lr = np.float32(plan.learning_rate(step))
            state, metrics = step_fn(state, frozen, next(global_batches), lr)
            if plan.measuring(step + 1):  # timing needs the step's result
                jax.block_until_ready(metrics)
                plan.observe(step + 1, time.perf_counter())
            step += 1
            last_metrics = metrics
            finite.add(step, metrics)
            saves.check(step)
            profiler.after_step(step, metrics)
            if log_due.due(step, plan.num_steps):
                finite.check()
                scalars = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                writer.write(
                    step,
                    {**scalars, **meter.scalars(step, prefetch.wait_s)},
                    progress=eta.progress(step, plan.num_steps),
                )
            if checkpoint_due.due(step):
                finite.check()
                saves.save(step, state)
            if eval_due.due(step, plan.num_steps):
                finite.check()
                # Process 0 evaluates (as the authors' rank 0); the others wait at a
                # coordination barrier, not a collective (see distributed.sync_hosts).
                if is_main:
                    if lpips_fn is None:
                        from tgic_jax.evaluation.driver import make_lpips_fn

                        lpips_fn = make_lpips_fn()
                    selection.evaluate_and_record(
                        model,
                        state.params,
                        text_encoder,
                        run,
                        lpips_fn,
                        writer,
                        workdir,
                        step,
                        step // spe,
                    )
                distributed.sync_hosts(f"tgic_jax/eval_{step}")
        if stop.reason:
            announce(f"{stop.reason}: stopping at step {step}")
        # Always leave the last step on disk (end of run, preemption, budget), unless the
        # run never trained (a signal during start-up: nothing new to save).
        finite.check()
        if step != start_step and manager.latest_step() != step:
            saves.save(step, state, force=True)
        saves.finish(step)
    except NonFiniteError as err:
        with contextlib.suppress(Exception):  # a save that failed meanwhile: not this error
            manager.wait_until_finished()  # the good saves in flight complete
        good = manager.latest_step()
        kept = (
            f"last good checkpoint: step {good} ({manager.directory / str(good)})"
            if good is not None
            else "no checkpoint was saved"
        )
        raise RunError(
            f"{err}: training stopped, nothing non-finite was saved; {kept}; "
            "lower optim.learning_rate or loss.lmbda"
        ) from None
    finally:
        profiler.stop(last_metrics)
        prefetch.close()
        stop.close()
        if sys.exc_info()[0] is None:
            manager.close()
        else:  # the error on its way up is the one to report; a failed save raises again
            with contextlib.suppress(Exception):
                manager.close()
        writer.close()
    if stop.reason == "SIGINT":
        saved = f"saved in {manager.directory}" if step != start_step else "nothing new to save"
        raise Interrupted(f"interrupted (SIGINT) at step {step}: {saved}; the same command resumes")
    return state


def _checkpoint_manager(ckpt: CkptConfig, workdir):
    # every_steps=1: the loop's `checkpoint_due` is the one rule of when to save
    return checkpoint.train_checkpoint_manager(workdir, 1, ckpt.keep, ckpt.use_async)


def _resume(ckpt: CkptConfig, workdir, manager, abstract):
    """(restored state, manager): the newest step that restores; damaged ones set aside."""
    state, step, skipped = checkpoint.restore_newest(manager, abstract)
    if skipped:
        distributed.sync_hosts("tgic_jax/restored")
        for bad, why in skipped:
            if jax.process_index() == 0:
                kept = checkpoint.set_aside(manager, bad)
                print(
                    f"checkpoint step {bad} does not restore ({why}): skipped, kept as {kept}",
                    file=sys.stderr,
                    flush=True,
                )
        distributed.sync_hosts("tgic_jax/set_aside")
        manager.close()  # it lists the steps once: a new one sees them gone
        manager = _checkpoint_manager(ckpt, workdir)
    announce(f"resumed from step {step}")
    return state, manager


class _Eta:
    """`step N/TOTAL, eta H:MM:SS` from the mean step time since the run's first step."""

    def __init__(self, start_step: int):
        self._start_step, self._t0 = start_step, None

    def progress(self, step: int, num_steps: int) -> str:
        """The progress text of a log line at `step`."""
        now = time.perf_counter()
        if self._t0 is None:  # the first step's time includes the input's warm-up
            self._t0, self._start_step = now, step
            return f"{step}/{num_steps}"
        per_step = (now - self._t0) / max(1, step - self._start_step)
        left = int(per_step * (num_steps - step))
        return f"{step}/{num_steps} eta {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def _throughput_instruments(profile_steps: str, step_fn, global_batch: int, mesh, workdir):
    """(ThroughputMeter, StepProfiler) of a run; logs the step's FLOPs and memory once."""
    flops = throughput.compiled_flops(step_fn)
    peak = throughput.peak_flops(jax.devices()[0].device_kind)
    memory = throughput.compiled_memory(step_fn)
    if flops or memory:
        gflop = f"{flops / 1e9:.1f} GFLOP" if flops else "? FLOP"
        gib = f"{memory['total'] / 2**30:.2f} GiB" if memory else "? GiB"
        peak_text = f"peak {peak / 1e12:.0f} TFLOP/s" if peak else "no known peak: MFU not logged"
        announce(
            f"train step per device: {gflop}, {gib} (XLA), "
            f"{jax.devices()[0].device_kind}, {peak_text}"
        )
    meter = throughput.ThroughputMeter(global_batch, mesh.size, flops, peak)
    profiler = throughput.StepProfiler(profile_steps, workdir / "tensorboard")
    return meter, profiler
