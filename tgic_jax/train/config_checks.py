"""Config checks of a training run, made before the run writes anything.

`validate` refuses values that would train silently wrong or fail minutes later (a
non-positive lmbda, a negative weight, a crop the model cannot downsample, a batch the
joint term's groups do not tile). `compare_with_workdir` checks a rerun against the
config.json its workdir was started with: a rerun may change how long and how it trains
(steps, learning rates, loss weights, checkpoints, logging, evaluation) but not what the
checkpoints hold or the order of the data, which a resumed run must continue. Every error
is a one-line `ConfigError`.
"""

from __future__ import annotations

import json
import math

from tgic_jax import config as config_lib
from tgic_jax.files import write_text_atomic
from tgic_jax.model.taco import DOWNSAMPLING_FACTOR as MODEL_STRIDE
from tgic_jax.train.errors import ConfigError

# Keys (dotted; a trailing "." means the whole section) a rerun may not change: they decide
# the parameters' shapes (so the optimizer state's too), the text the model was trained
# with, or the order of the batches (seed, the data, the batch). Checked before anything is
# written, so a refused rerun leaves the run's config.json as it was.
FROZEN = (
    "model.",
    "text.",
    "seed",
    "mesh.",
    "input.source",
    "input.tfds_name",
    "input.tfds_split",
    "input.folder",
    "input.captions",
    "input.pairs",
    "input.max_images",
    "input.min_short_side",
    "input.crop_size",
    "input.batch_size_per_device",
    "input.shuffle_buffer",
)
# ...except these, which change the arithmetic, not the shapes or the data.
CHANGEABLE = ("model.compute_dtype",)

CONFIG_JSON = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
RUN_KEY = config_lib.RUN_RECORD


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def typed(config) -> config_lib.RunConfig:
    """The run's typed config (a RunConfig is returned as it is); an unknown key is a
    one-line ConfigError naming the closest known key."""
    try:
        return config_lib.RunConfig.from_config(config)
    except config_lib.ConfigKeyError as err:
        raise ConfigError(str(err)) from None


def validate(run, global_batch: int) -> None:
    """Raises a one-line ConfigError for a value the run cannot train with as meant.

    `run`: a RunConfig, or the ConfigDict it is read from.
    """
    run = typed(run)
    loss = run.loss
    lmbda = float(loss.lmbda)
    _check(
        math.isfinite(lmbda) and lmbda > 0,
        f"loss.lmbda={loss.lmbda}: must be > 0 (the rate-distortion trade-off)",
    )
    for key in ("k_p", "k_j", "clip_embed_weight"):
        given = getattr(loss, key)
        value = float(given)
        _check(math.isfinite(value) and value >= 0, f"loss.{key}={given}: must be >= 0")
    crop = int(run.input.crop_size)
    _check(
        crop >= MODEL_STRIDE and crop % MODEL_STRIDE == 0,
        f"input.crop_size={crop}: must be a multiple of the model's stride {MODEL_STRIDE} "
        f"(e.g. {max(MODEL_STRIDE, crop // MODEL_STRIDE * MODEL_STRIDE)})",
    )
    per_device = int(run.input.batch_size_per_device)
    _check(per_device >= 1, f"input.batch_size_per_device={per_device}: must be >= 1")
    if float(loss.k_j) > 0:
        _check(
            run.text.encoder == "clip",
            "loss.k_j > 0 needs text.encoder='clip': the joint term reuses the conditioning tokens",
        )
    from tgic_jax.train import losses  # the joint term's own rule, in one place

    try:
        losses.check_joint_group(loss, global_batch)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check(int(run.log_every_steps) >= 1, f"log_every_steps={run.log_every_steps}: must be >= 1")
    _check(
        int(run.ckpt.every_steps) >= 1,
        f"ckpt.every_steps={run.ckpt.every_steps}: must be >= 1",
    )


def check_model_fits(run, global_batch: int) -> None:
    """Raises a one-line ConfigError when the model cannot be built, or when its train state
    (parameters and optimizer state, replicated on every device) exceeds a device's memory.

    Measured before: model.N=99999999 asked XLA for ~28 billion GiB after config.json was
    written. Shapes only (`jax.eval_shape`, under a second): nothing is allocated.
    """
    import functools

    import jax

    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import optim, train_state

    run = typed(run)
    try:
        model_config = ModelConfig.from_config(run.model)
        model = TACO(model_config)
        optimizer = optim.make_optimizer(run.optim)
        shapes = jax.eval_shape(
            functools.partial(train_state.create_train_state, model, optimizer, int(run.seed))
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from None
    need = sum(int(x.size) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(shapes))
    have = device_memory_bytes()
    _check(
        have is None or need <= have,
        f"model.N={model_config.N}, model.M={model_config.M}: the train state needs "
        f"{need / 2**30:,.1f} GiB on every device, more than its "
        f"{(have or 0) / 2**30:,.1f} GiB",
    )


def device_memory_bytes() -> int | None:
    """A device's memory (an accelerator's limit, or a CPU host's RAM); None if unknown."""
    import os

    import jax

    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - some backends do not implement it
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _frozen(key: str) -> bool:
    if key in CHANGEABLE:
        return False
    return any(key.startswith(f) if f.endswith(".") else key == f for f in FROZEN)


def differences(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} of the keys both configs have and differ in."""
    a, b = _flat(old), _flat(new)
    return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}


def _shown(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{k} {json.dumps(o)} -> {json.dumps(n)}" for k, (o, n) in changes.items())


def compare_with_workdir(run, workdir, devices: int | None = None) -> dict[str, tuple]:
    """The allowed changes of a rerun against workdir/config.json ({} for a new run).

    `run`: a RunConfig, or the ConfigDict it is read from.

    Raises ConfigError naming the keys that would change the model, the optimizer state or
    the data order, or a device count other than the run's (it sets the global batch).
    Reads only: nothing is written here.
    """
    path = workdir / CONFIG_JSON
    if not path.exists():
        return {}
    try:
        old = config_lib.upgrade(json.loads(path.read_text()))
    except ValueError as err:
        raise ConfigError(
            f"{path}: not readable JSON ({err}); move it away to start a new run here"
        ) from err
    run = typed(run)
    new = run.to_dict()  # today's names, tuples as lists, as `upgrade` reads the old one
    changes = differences(old, new)
    refused = {k: v for k, v in changes.items() if _frozen(k)}
    if refused:
        raise ConfigError(
            f"{workdir} was trained with another config: {_shown(refused)} would not fit its "
            "checkpoints or data order (use a new --workdir, or the run's values)"
        )
    ran_on = old.get(RUN_KEY) or {}
    if devices is not None and ran_on.get("devices") not in (None, devices):
        per_device = int(run.input.batch_size_per_device)
        raise ConfigError(
            f"{workdir} was trained on {ran_on['devices']} devices (global batch "
            f"{ran_on['devices'] * per_device}); this run has {devices} (global batch "
            f"{devices * per_device}), which would change the data order and the steps per "
            f"epoch (resume it on {ran_on['devices']} devices, or use a new --workdir)"
        )
    return changes


def record_config(run, workdir, changes: dict[str, tuple], devices: int | None = None) -> None:
    """Writes workdir/config.json, every key of `run` (a RunConfig or its ConfigDict) with
    the run's device count under "run" when given; a rerun's allowed changes are appended
    to the history."""
    if changes:
        entry = {"changes": {k: [o, n] for k, (o, n) in changes.items()}}
        history = workdir / CONFIG_HISTORY
        old = history.read_text() if history.exists() else ""
        history.write_text(old + json.dumps(entry) + "\n")  # rewritten whole: gs:// has no append
        print(
            f"config: changed since the last run ({_shown(changes)}); recorded in {CONFIG_HISTORY}",
            flush=True,
        )
    record = typed(run).to_dict()
    if devices is not None:
        record[RUN_KEY] = {"devices": int(devices)}
    write_text_atomic(workdir / CONFIG_JSON, json.dumps(record, indent=1))
