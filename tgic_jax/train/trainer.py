"""Training: the train state, the optimizer, the jitted update step and the loop.

`train_and_evaluate(config, workdir)` is the whole run (train.py only parses flags). In
labelled sections: mesh, model + loss, state (created or restored), input, update step,
checkpoints, metrics, evaluation, loop. The update step is a pure function of
(state, frozen loss weights, global batch), jitted with explicit shardings and the state
donated; data parallelism comes from the batch being sharded over the `data` mesh axis.

Optimizers (as in the authors' code): Adam on every parameter except the bottleneck's
`quantiles`, with global-norm clipping of its gradients and the paper's step decay; a
separate Adam on `quantiles` driven by the auxiliary loss only.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from tgic_jax.checkpoints import inference
from tgic_jax.evaluation import sets
from tgic_jax.model.layers import Params
from tgic_jax.model.taco import TACO, ModelConfig, init_variables
from tgic_jax.train import checkpoint as ckpt_lib
from tgic_jax.train import config_checks, input_pipeline, throughput
from tgic_jax.train import sharding as shd
from tgic_jax.train.errors import Interrupted, RunError
from tgic_jax.train.finite_watch import NonFiniteError, NonFiniteWatch
from tgic_jax.train.startup_signals import StartupSignals
from tgic_jax.train.stopping import StopAgreement
from tgic_jax.train.workdir_lock import WorkdirLock

QUANTILES = ("entropy_bottleneck", "quantiles")


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: params, optimizer state, step, rng."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    rng: jax.Array


# ----------------------------------------------------------------------------- schedule
def global_batch_size(config, num_devices: int) -> int:
    """Global batch = batch_size_per_device x devices in the mesh."""
    return int(config.input.batch_size_per_device) * int(num_devices)


def steps_per_epoch(optim_config, global_batch: int) -> int:
    """train_images // global batch (at least 1)."""
    return max(1, int(optim_config.train_images) // int(global_batch))


def with_epoch_size(config: ml_collections.ConfigDict, num_pairs: int) -> ml_collections.ConfigDict:
    """A copy of config whose epoch (optim.train_images) is the counted number of pairs."""
    config = ml_collections.ConfigDict(config.to_dict())
    configured = int(config.optim.train_images)
    if configured > 0 and configured != num_pairs:
        logging.warning("optim.train_images=%d, the data has %d pairs: using the data's count",
                        configured, num_pairs)  # fmt: skip
    config.optim.train_images = int(num_pairs)
    return config


def total_steps(config, global_batch: int) -> int:
    """config.total_steps when > 0, else epochs x steps per epoch."""
    explicit = int(config.get("total_steps", -1) or -1)
    if explicit > 0:
        return explicit
    return int(config.optim.epochs) * steps_per_epoch(config.optim, global_batch)


def decay_steps(optim_config, global_batch: int, num_steps: int | None = None) -> list[int]:
    """The steps where the learning rate drops: decay_epochs x steps per epoch.

    With `num_steps` (a run fitted to a wall-clock budget), each decay falls at the same
    fraction of num_steps as the epoch schedule puts it (45/50 and 48/50 for the paper), so a
    shortened run still ends annealed.
    """
    spe = steps_per_epoch(optim_config, global_batch)
    steps = [int(e) * spe for e in optim_config.get("decay_epochs", ())]
    if num_steps is None:
        return steps
    planned = max(1, int(optim_config.epochs) * spe)
    return [round(s * int(num_steps) / planned) for s in steps]


def learning_rate_schedule(
    optim_config, global_batch: int, num_steps: int | None = None
) -> optax.Schedule:
    """Constant learning_rate, x decay_factor at each of `decay_steps`."""
    factor = float(optim_config.get("decay_factor", 0.1))
    boundaries = {}
    for s in decay_steps(optim_config, global_batch, num_steps):
        boundaries[s] = boundaries.get(s, 1.0) * factor
    return optax.piecewise_constant_schedule(float(optim_config.learning_rate), boundaries)


def param_labels(params: Params) -> Params:
    """'aux' for the bottleneck quantiles, 'main' for every other parameter."""
    flat = flax.traverse_util.flatten_dict(params)
    labels = {k: "aux" if k[-2:] == QUANTILES else "main" for k in flat}
    return flax.traverse_util.unflatten_dict(labels)


def make_optimizer(optim_config, global_batch: int) -> optax.GradientTransformation:
    """Main Adam (clipped) on all but quantiles; aux Adam on quantiles only.

    The main learning rate is not inside: the step scales the main updates by the value the
    host passes in (`apply_learning_rate`), so the schedule can follow a time budget that is
    only known after compilation without recompiling.
    """
    del global_batch  # the schedule is applied by the step (learning_rate_schedule)
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


def _with_quantile_grads(grads: Params, aux_grads: Params) -> Params:
    """The main gradients with the quantiles' entry replaced by the aux-loss gradient."""
    flat = flax.traverse_util.flatten_dict(grads)
    aux_flat = flax.traverse_util.flatten_dict(aux_grads)
    for k in flat:
        if k[-2:] == QUANTILES:
            flat[k] = aux_flat[k]
    return flax.traverse_util.unflatten_dict(flat)


def _main_grad_norm(grads: Params) -> jax.Array:
    flat = flax.traverse_util.flatten_dict(grads)
    return optax.global_norm([v for k, v in flat.items() if k[-2:] != QUANTILES])


# ----------------------------------------------------------------------------- state
def create_train_state(
    model: TACO, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh state (pure: jit it with out_shardings to create it already sharded)."""
    # Initial values from XLA's RngBitGenerator: ~430 threefry initializers took 30-60 s to
    # compile on CPU, this takes seconds. It is deterministic for a given platform, so every
    # process creates the same replicated params. The noise of training steps uses threefry
    # (`rng`), whose values do not depend on how the batch is sharded.
    init_rng = jax.random.key(seed, impl="unsafe_rbg")
    train_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    params = init_variables(model, init_rng)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=train_rng,
    )


def abstract_train_state(model, optimizer, seed: int, mesh, mesh_config=None):
    """(the state's shardings, the state as shapes with those shardings): nothing compiled.

    Enough to compile the train step (`lower`) while the state itself is being made.
    """
    shapes = jax.eval_shape(functools.partial(create_train_state, model, optimizer, seed))
    shardings = shd.state_sharding(mesh, shapes, mesh_config)
    abstract = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    return shardings, abstract


def init_sharded_state(model, optimizer, seed: int, mesh, mesh_config=None):
    """(state created directly with its shardings, the shardings, the abstract state)."""
    make = functools.partial(create_train_state, model, optimizer, seed)
    shardings, abstract = abstract_train_state(model, optimizer, seed, mesh, mesh_config)
    # Compile, then meet, then run: the first multi-host program forms the CPU (gloo)
    # communicator, which waits only 30 s for the other hosts (see `shd.sync_hosts`), and
    # hosts finish compiling at different times under load.
    create = jax.jit(make, out_shardings=shardings).lower().compile()
    shd.sync_hosts("tgic_jax/init_compiled")
    return create(), shardings, abstract


# ----------------------------------------------------------------------------- step
def make_train_step(model: TACO, loss_fn, optimizer, text_fn=None, clip_text_fn=None):
    """The pure update: (state, frozen, batch, main learning rate) -> (new state, metrics).

    With text_fn(frozen["text"], ids, mask) the batch carries "input_ids" and
    "attention_mask" and the frozen text tower runs here, inside the step; with
    clip_text_fn(frozen["clip"], ids, mask) the same tokens give the joint term's CLIP text
    features. Without them the batch carries the states as "text" (and "clip_text").
    """

    def train_step(state: TrainState, frozen: Params, batch: dict, learning_rate: jax.Array):
        noise_rng = jax.random.fold_in(state.rng, state.step)
        if text_fn is None:
            text = batch["text"]
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            text = jax.lax.stop_gradient(text_fn(frozen["text"], ids, mask))
        clip_text = batch.get("clip_text")  # precomputed (benchmarks) unless computed here
        if clip_text_fn is not None:
            clip_text = clip_text_fn(frozen["clip"], batch["input_ids"], batch["attention_mask"])

        def main_loss(params):
            outputs = model.apply(
                {"params": params}, batch["image"], text, train=True,
                rngs={"noise": noise_rng},
            )  # fmt: skip
            return loss_fn(frozen, outputs, batch["image"], clip_text)

        def aux_loss(params):
            return model.apply({"params": params}, method=TACO.aux_loss)

        (_, metrics), grads = jax.value_and_grad(main_loss, has_aux=True)(state.params)
        aux, aux_grads = jax.value_and_grad(aux_loss)(state.params)
        grads = _with_quantile_grads(grads, aux_grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        updates = apply_learning_rate(updates, learning_rate)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(
            metrics, aux_loss=aux, grad_norm=_main_grad_norm(grads),
            learning_rate=learning_rate,
        )  # fmt: skip
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def jit_train_step(train_step, mesh, state_shardings):
    """jit with explicit shardings: state as given (donated), batch on `data`."""
    replicated = shd.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, replicated, shd.batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, shd.replicated(mesh)),
        donate_argnums=(0,),
    )


# ----------------------------------------------------------------------------- eval
def eval_set_of(eval_config) -> sets.EvalSet:
    """The captioned images of config.eval's folder (listed as the training input is)."""
    items = input_pipeline.list_folder(
        eval_config.folder, eval_config.get("captions") or None,
        int(eval_config.get("max_images", 0)),
    )  # fmt: skip
    note = sets.NOTE_FROM_JSON
    eval_items = [sets.EvalItem(p.name, str(p), captions=tuple(c), caption_note=note)
                  for p, c in items]  # fmt: skip
    return sets.EvalSet(Path(str(eval_config.folder)).name, eval_items)


def evaluate_params(
    model: TACO, params: Params, text_encoder, eval_set: sets.EvalSet, lpips_fn=None,
    keep_images: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """`driver.evaluate_means` of the current parameters (a host copy; process 0)."""
    from tgic_jax.evaluation import driver  # the codec and LPIPS load only when evaluating

    variables = {"params": jax.device_get(params)}
    codec = driver.TacoCodec.from_variables(model, variables, text_encoder, "train")
    return driver.evaluate_means(codec, eval_set, lpips_fn, keep_images)


# ----------------------------------------------------------------------------- best
BEST_DIR = "best"
# name -> (metric in the evaluation, True when higher is better); the authors' four.
BEST_BY = {
    "best_psnr": ("psnr_real", True),
    "best_ms_ssim": ("ms_ssim", True),
    "best_bpp": ("bpp_real", False),
    "best_lpips": ("lpips", False),
}
EVAL_CSV = "eval.csv"
EVAL_COLUMNS = ("step", "epoch", "bpp_real", "bpp_estimate", "psnr_real", "psnr", "ms_ssim",
                "lpips", "lpips_zero_one")  # fmt: skip


def read_best(workdir: str | os.PathLike) -> dict[str, dict]:
    """{name: its metrics.json} of the best checkpoints kept in workdir/best/."""
    out = {}
    for name in BEST_BY:
        path = inference.as_path(workdir) / BEST_DIR / name / "metrics.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def _save_params(folder: epath.Path, params: Params, info: dict) -> None:
    """params.npz + metrics.json, written beside and renamed: never a half folder."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    tmp = folder.parent / (folder.name + ".tmp")
    if tmp.exists():
        tmp.rmtree()
    tmp.mkdir(parents=True)
    with (tmp / "params.npz").open("wb") as f:  # through epath: gs:// workdirs too
        np.savez(f, **{"/".join(k): np.asarray(v) for k, v in flat.items()})
    (tmp / "metrics.json").write_text(json.dumps(info, indent=1))
    if folder.exists():
        folder.rmtree()
    tmp.rename(folder)


def load_best_params(workdir: str | os.PathLike, name: str) -> tuple[Params, dict]:
    """(params, metrics) of the best checkpoint `name` (e.g. 'best_psnr') of a workdir."""
    if name not in BEST_BY:
        raise ValueError(f"unknown selection {name!r}: one of {sorted(BEST_BY)}")
    folder = inference.as_path(workdir) / BEST_DIR / name
    if not (folder / "params.npz").is_file():
        raise FileNotFoundError(f"no {name} checkpoint in {folder.parent} (no evaluation yet?)")
    with np.load(io.BytesIO((folder / "params.npz").read_bytes())) as f:
        params = flax.traverse_util.unflatten_dict({tuple(k.split("/")): f[k] for k in f.files})
    return params, json.loads((folder / "metrics.json").read_text())


def record_evaluation(
    workdir: str | os.PathLike, step: int, epoch: int, scalars: dict, params
) -> list:
    """Appends a row to workdir/eval.csv and keeps params that beat a best; returns those."""
    workdir = inference.as_path(workdir)
    csv_path = workdir / EVAL_CSV
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=EVAL_COLUMNS, extrasaction="ignore")
    if not csv_path.is_file():
        writer.writeheader()
    writer.writerow({"step": step, "epoch": epoch, **scalars})
    # Rewritten whole: object stores (gs://) have no append.
    old = csv_path.read_text() if csv_path.is_file() else ""
    csv_path.write_text(old + rows.getvalue())
    best = read_best(workdir)
    improved = []
    for name, (key, higher) in BEST_BY.items():
        if key not in scalars:
            continue
        old = best.get(name, {}).get(key)
        if old is None or (scalars[key] > old if higher else scalars[key] < old):
            _save_params(workdir / BEST_DIR / name, params,
                         {"step": step, "epoch": epoch, **scalars})  # fmt: skip
            improved.append(name)
    return improved


# ----------------------------------------------------------------------------- metrics
class MetricWriter:
    """TensorBoard scalars (process 0 only) and a console line."""

    def __init__(self, logdir: str | os.PathLike, enabled: bool):
        self._writer = None
        if enabled:
            from tgic_jax.train.summary_writer import SummaryWriter  # no TensorFlow

            self._writer = SummaryWriter(str(logdir))  # str() of an epath keeps gs://

    def write(self, step: int, scalars: dict[str, float], prefix: str = "train",
              progress: str = "") -> None:  # fmt: skip
        """Writes scalars at step and prints one line (`progress`, e.g. '5/20 eta 0:01:02')."""
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.scalar(f"{prefix}/{k}", v, step)
            self._writer.flush()
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
        logging.info("[%s] step %d %s", prefix, step, shown)
        if jax.process_index() == 0:
            print(f"[{prefix}] step {progress or step} {shown}", flush=True)

    def write_images(self, step: int, images: list, prefix: str = "eval") -> None:
        """A few originals beside their decoded images (uint8 [H, 2W, 3] each)."""
        if self._writer is not None:
            for i, image in enumerate(images):
                self._writer.image(f"{prefix}/original_decoded_{i}", image, step)
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()


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

    def __init__(self, optim_config, global_batch: int, num_steps: int, budget_s: float,
                 begun: float):  # fmt: skip
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
        fit = shd.agree_on_int(min(fit, self.planned))
        if fit != self.num_steps:
            self.num_steps, self.fitted = fit, fit < self.planned
            scaled = self.num_steps if self.fitted else None
            self._schedule = learning_rate_schedule(self.optim_config, self.global_batch, scaled)
            decays = decay_steps(self.optim_config, self.global_batch, scaled)
            logging.info("time budget: %d steps fit, decays at %s", fit, decays)
            if jax.process_index() == 0:
                print(f"time budget: {fit} steps fit, decays at {decays}", flush=True)


# ----------------------------------------------------------------------------- loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> TrainState:
    """Trains (resuming from workdir's newest restorable checkpoint), evaluates, checkpoints.

    `workdir` may be a URL (gs://bucket/run): checkpoints, config.json and TensorBoard
    events are written there, not to a local folder. One run at a time per workdir (a lock);
    a reason to stop that the user can act on raises a one-line `RunError`.
    """
    begun = time.perf_counter()  # train_time_limit_minutes counts from here (compile included)
    workdir = inference.as_path(workdir)
    # The config checks come before anything is written (the workdir included).
    mesh = shd.make_mesh(config.get("mesh"))
    config_checks.validate(config, global_batch_size(config, mesh.size))
    workdir.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(workdir)
    if jax.process_index() == 0:
        lock.acquire()
    # Until the loop, SIGTERM and Ctrl-C end the process at once with one line: nothing is
    # trained yet, and the loop's handlers would only run after the minute-long compilation.
    startup = StartupSignals("stopping before the first step (nothing trained to save)")
    try:
        with startup:
            return _train(config, workdir, begun, mesh, startup)
    finally:
        lock.release()


def _train(config, workdir: epath.Path, begun: float, mesh, startup) -> TrainState:
    is_main = jax.process_index() == 0
    global_batch = global_batch_size(config, mesh.size)
    host_batch = shd.local_batch_size(global_batch, mesh)
    changes = config_checks.compare_with_workdir(config, workdir, devices=mesh.size)
    if is_main:
        config_checks.record_config(config, workdir, changes, devices=mesh.size)

    precision = config.get("jax_default_matmul_precision")
    if precision:  # before anything is traced; see docs/RECIPE.md (numerics)
        jax.config.update("jax_default_matmul_precision", precision)
    if not config.loss.get("weights_confirmed", True):
        logging.warning("loss.lmbda=%g: (k_p, k_j)=(%g, %g) are not confirmed by the authors",
                        config.loss.lmbda, config.loss.k_p, config.loss.k_j)  # fmt: skip

    # (image, caption) pair sources: the epoch is one pass over the pairs, counted here.
    pairs = None
    if input_pipeline.uses_pairs(config.input):
        pairs = input_pipeline.list_pairs(config.input)
        config = with_epoch_size(config, len(pairs))
        if is_main:
            print(f"epoch: {len(pairs)} (image, caption) pairs, "
                  f"{steps_per_epoch(config.optim, global_batch)} steps", flush=True)  # fmt: skip
    num_steps = total_steps(config, global_batch)

    # Model, loss, optimizer.
    from tgic_jax.train import losses  # heavy (LPIPS, transformers)

    model = TACO(ModelConfig.from_config(config.model))
    text_encoder = input_pipeline.build_text_encoder(config.text, config.model.text_dim)
    clip_model, clip_text_fn = None, None
    if float(config.loss.k_j) > 0:  # validate: text.encoder is "clip"
        clip_model = losses.build_clip(config.loss.clip_path)
        clip_text_fn = functools.partial(losses.clip_text_embeddings, clip_model)
    loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
    frozen = shd.put_replicated({**frozen, "text": text_encoder.params}, mesh)
    optimizer = make_optimizer(config.optim, global_batch)

    # State: restored from the workdir's newest checkpoint that restores, else fresh.
    shd.sync_hosts("tgic_jax/start")  # orbax's first barrier is a collective: meet first
    manager = _checkpoint_manager(config, workdir)
    state, state_shardings, abstract = init_sharded_state(
        model, optimizer, int(config.seed), mesh, config.get("mesh")
    )
    if manager.all_steps():
        del state
        state, manager = _resume(config, workdir, manager, abstract)
    start_step = int(state.step)
    # Input: this host's share of every global batch, captions tokenized on the host.
    if pairs is not None:  # order from (seed, epoch): resumes exactly at start_step
        ds = input_pipeline.pairs_dataset(
            config.input, pairs, global_batch, host_batch, int(config.seed), start_step,
            jax.process_index(),
        )  # fmt: skip
    else:
        ds = input_pipeline.make_dataset(
            config.input, host_batch, seed=int(config.seed) + start_step,
            process_index=jax.process_index(), process_count=jax.process_count(),
        )  # fmt: skip
    batches = input_pipeline.tokenize_batches(ds, text_encoder)

    # Update step.
    step_fn = jit_train_step(
        make_train_step(model, loss_fn, optimizer, text_encoder.apply, clip_text_fn),
        mesh, state_shardings,
    )  # fmt: skip
    # An optional wall-clock budget for the whole run (the demo's), compile included: the
    # plan fits the schedule into it (process 0's estimate on every host), and StopAgreement
    # stops every host at the same step should it still run out.
    budget_s = float(config.get("train_time_limit_minutes", 0) or 0) * 60
    plan = BudgetPlan(config.optim, global_batch, num_steps, budget_s, begun)

    # Compile before the first step, then meet: hosts finish compiling minutes apart under
    # load, and the first collective would otherwise time out (see `sync_hosts`). Batches
    # are prepared and put on the devices 2 steps ahead, in a thread.
    prefetch = throughput.Prefetcher(
        batches, functools.partial(shd.make_global_batch, mesh),
        depth=int(config.input.get("prefetch_batches", 2)),
    )  # fmt: skip
    global_batches = prefetch
    if start_step < num_steps:
        if is_main:
            print(f"compiling the train step (about a minute on a CPU) for steps "
                  f"{start_step + 1}-{num_steps} ...", flush=True)  # fmt: skip
        first = next(global_batches)
        step_fn = step_fn.lower(state, frozen, first, np.float32(0)).compile()
        global_batches = itertools.chain([first], global_batches)
    shd.sync_hosts("tgic_jax/compiled")
    meter, profiler = _throughput_instruments(config, step_fn, global_batch, mesh, workdir)

    writer = MetricWriter(workdir / "tensorboard", enabled=is_main)
    startup.close()
    stop = StopAgreement(manager, budget_s, begun)  # from here SIGINT / SIGTERM save, then stop
    log_every = max(1, int(config.get("log_every_steps", 100)))
    checkpoint_every = max(1, int(config.ckpt.every_steps))
    eval_config = config.get("eval")
    has_eval = bool(eval_config and eval_config.get("folder"))
    eval_every = int(eval_config.get("every_steps", 0)) if has_eval else 0
    spe = steps_per_epoch(config.optim, global_batch)
    eval_epochs = int(eval_config.get("every_epochs", 0)) if has_eval else 0
    lpips_fn = None
    step = start_step
    last_metrics = None
    # Nothing non-finite is saved or evaluated: the watch reads every step's loss and
    # gradient norm at each log line and before each save and evaluation.
    finite = NonFiniteWatch()
    saves = ckpt_lib.SaveWatch(manager)
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
            if step % log_every == 0 or step == plan.num_steps:
                finite.check()
                scalars = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                writer.write(step, {**scalars, **meter.scalars(step, prefetch.wait_s)},
                             progress=eta.progress(step, plan.num_steps))  # fmt: skip
            if step % checkpoint_every == 0:  # orbax alone would also save the first step of a run
                finite.check()
                saves.save(step, state)
            due = (eval_every and step % eval_every == 0) or (
                eval_epochs and step % (eval_epochs * spe) == 0
            )
            if due or ((eval_every or eval_epochs) and step == plan.num_steps):
                finite.check()
                # Process 0 evaluates (as the authors' rank 0); the others wait at a
                # coordination barrier, not a collective (see sharding.sync_hosts).
                if is_main:
                    if lpips_fn is None:
                        from tgic_jax.evaluation.driver import make_lpips_fn

                        lpips_fn = make_lpips_fn()
                    evaluate_and_record(model, state.params, text_encoder, eval_config,
                                         lpips_fn, writer, workdir, step, step // spe)  # fmt: skip
                shd.sync_hosts(f"tgic_jax/eval_{step}")
        if stop.reason:
            logging.info("%s: stopping at step %d", stop.reason, step)
            if is_main:
                print(f"{stop.reason}: stopping at step {step}", flush=True)
        # Always leave the last step on disk (end of run, preemption, budget), unless the
        # run never trained (a signal during start-up: nothing new to save).
        finite.check()
        if step != start_step and manager.latest_step() != step:
            saves.save(step, state, force=True)
        manager.wait_until_finished()
        saves.check(step)
    except NonFiniteError as err:
        manager.wait_until_finished()  # the good saves in flight complete
        good = manager.latest_step()
        kept = (f"last good checkpoint: step {good} ({manager.directory / str(good)})"
                if good is not None else "no checkpoint was saved")  # fmt: skip
        raise RunError(f"{err}: training stopped, nothing non-finite was saved; {kept}; "
                       "lower optim.learning_rate or loss.lmbda") from None  # fmt: skip
    finally:
        profiler.stop(last_metrics)
        prefetch.close()
        stop.close()
        manager.close()
        writer.close()
    if stop.reason == "SIGINT":
        saved = f"saved in {manager.directory}" if step != start_step else "nothing new to save"
        raise Interrupted(f"interrupted (SIGINT) at step {step}: {saved}; the same command "
                          "resumes")  # fmt: skip
    return state


def _checkpoint_manager(config, workdir):
    return ckpt_lib.train_checkpoint_manager(
        workdir, config.ckpt.every_steps, config.ckpt.keep, config.ckpt.get("use_async", True)
    )


def _resume(config, workdir, manager, abstract):
    """(restored state, manager): the newest step that restores; damaged ones set aside."""
    state, step, skipped = ckpt_lib.restore_newest(manager, abstract)
    if skipped:
        shd.sync_hosts("tgic_jax/restored")
        for bad, why in skipped:
            if jax.process_index() == 0:
                kept = ckpt_lib.set_aside(manager, bad)
                print(f"checkpoint step {bad} does not restore ({why}): skipped, kept as "
                      f"{kept}", file=sys.stderr, flush=True)  # fmt: skip
        shd.sync_hosts("tgic_jax/set_aside")
        manager.close()  # it lists the steps once: a new one sees them gone
        manager = _checkpoint_manager(config, workdir)
    logging.info("resumed from step %d", step)
    if jax.process_index() == 0:
        print(f"resumed from step {step}", flush=True)
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


def evaluate_and_record(
    model, params, text_encoder, eval_config, lpips_fn, writer, workdir, step: int, epoch: int
) -> None:
    """One evaluation of the loop: TensorBoard, eval.csv and the best checkpoints.

    A failing evaluation does not stop training: the run's checkpoints are intact and
    eval.py can evaluate them afterwards, while a days-long run lost to, say, one
    unreadable evaluation image is not. It is reported loudly instead (an ERROR log with
    the traceback and a line on stderr) and writes no eval.csv row: never a mean over the
    images that happened to work.
    """
    try:
        ev = evaluate_params(model, params, text_encoder, eval_set_of(eval_config), lpips_fn,
                             int(eval_config.get("images_to_log", 0)))  # fmt: skip
    except Exception as err:  # reported below; training goes on (see above)
        logging.exception("evaluation at step %d failed", step)
        print(f"[eval] step {step} FAILED, no eval.csv row: {type(err).__name__}: {err}",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    writer.write_images(step, ev.pop("images", []))
    writer.write(step, ev, "eval")
    best = record_evaluation(workdir, step, epoch, ev, params)
    if best:
        print(f"[eval] step {step} new {', '.join(best)}", flush=True)


def _throughput_instruments(config, step_fn, global_batch: int, mesh, workdir):
    """(ThroughputMeter, StepProfiler) of a run; logs the step's FLOPs and memory once."""
    flops = throughput.compiled_flops(step_fn)
    peak = throughput.peak_flops(jax.devices()[0].device_kind)
    memory = throughput.compiled_memory(step_fn)
    if jax.process_index() == 0 and (flops or memory):
        gflop = f"{flops / 1e9:.1f} GFLOP" if flops else "? FLOP"
        gib = f"{memory['total'] / 2**30:.2f} GiB" if memory else "? GiB"
        peak_text = f"peak {peak / 1e12:.0f} TFLOP/s" if peak else "no known peak: MFU not logged"
        line = (f"train step per device: {gflop}, {gib} (XLA), "
                f"{jax.devices()[0].device_kind}, {peak_text}")  # fmt: skip
        logging.info(line)
        print(line, flush=True)
    meter = throughput.ThroughputMeter(global_batch, mesh.size, flops, peak)
    profiler = throughput.StepProfiler(config.get("profile_steps", ""), workdir / "tensorboard")
    return meter, profiler


# ----------------------------------------------------------------------------- export
def write_workdir_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Writes the run's config.json (read back by `load_workdir_config`)."""
    (inference.as_path(workdir) / "config.json").write_text(config.to_json(indent=1))


def load_workdir_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a training workdir was started with (its config.json)."""
    text = (inference.as_path(workdir) / "config.json").read_text()
    return ml_collections.ConfigDict(json.loads(text))


def export_inference(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    step: int | None = None,
    select: str | None = None,
) -> epath.Path:
    """Writes an inference checkpoint (params, config, coding tables; no optimizer state).

    select: a kept best checkpoint ('best_psnr', 'best_ms_ssim', 'best_bpp', 'best_lpips')
    instead of the latest (or given) step.
    """
    config = load_workdir_config(workdir)
    if select:
        if step is not None:
            raise ValueError("give --step or --select, not both")
        params, info = load_best_params(workdir, select)
        step = int(info["step"])
    else:
        params, step = ckpt_lib.restore_train_params(
            workdir, step, report=lambda line: print(line, file=sys.stderr, flush=True)
        )
    bad = [k for k, v in flax.traverse_util.flatten_dict(params).items()
           if not np.isfinite(v).all()]  # fmt: skip
    if bad:  # coding tables of NaN pmfs fail deep in the range coder otherwise
        raise ValueError(f"step {step} has non-finite parameters ({'/'.join(bad[0])}, "
                         f"{len(bad)} arrays): export an earlier --step")  # fmt: skip
    return inference.save_inference(
        out, ModelConfig.from_config(config.model), params,
        text_config={"width": int(config.model.text_dim), **config.text.to_dict()},
        extra={"train_step": step},
    )  # fmt: skip
