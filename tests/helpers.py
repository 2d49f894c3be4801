"""What several test files build: the tiny model, its random variables, images, text states;
for the training tests, train.py's command and environment and workdirs with checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tgic_jax.model.taco import TACO, ModelConfig, init_variables
from tgic_jax.train import optim, train_state

TINY = ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=8)


def random_variables(model: TACO, seed: int = 0) -> dict:
    """Random but well-scaled variables, without running the (slow) Flax init."""
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )
    rng = np.random.default_rng(seed)
    params = {}
    for path, s in shapes.items():
        leaf, shape = path[-1], s.shape
        if leaf in ("kernel", "in_proj_weight"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else shape[-1]
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("bias", "in_proj_bias"):
            a = rng.normal(0.0, 0.05, shape)
        elif leaf == "scale":
            a = np.ones(shape)
        elif leaf == "gamma":
            a = np.full(shape, 0.5)  # the text path matters
        elif leaf.startswith("matrices_"):
            a = np.full(shape, np.log(np.expm1(1.0 / 10.0**0.2 / shape[1])))
        elif leaf.startswith("biases_"):
            a = rng.uniform(-0.5, 0.5, shape)
        elif leaf.startswith("factors_"):
            a = np.zeros(shape)
        elif leaf == "quantiles":
            med = rng.uniform(-0.5, 0.5, (shape[0], 1, 1))  # non-integer medians
            a = med + np.array([-10.0, 0.0, 10.0])
        else:
            raise AssertionError(f"unknown leaf {path}")
        params[path] = np.asarray(a, np.float32)
    return {"params": unflatten_dict(params)}


def tiny_model(seed: int = 0):
    """(model, variables with tables) of the tiny test size."""
    from tgic_jax.coding.tables import build_tables

    model = TACO(TINY)
    v = random_variables(model, seed)
    v["tables"] = build_tables(v["params"])
    return model, v


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with texture, float32 [h, w, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 1)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    return np.clip(0.5 + 0.35 * base + 0.1 * rng.normal(size=(h, w, 3)), 0, 1).astype(np.float32)


def text_states(seed: int = 0, tokens: int = 7, dim: int = TINY.text_dim) -> np.ndarray:
    """Random text states of `tokens` x `dim` (what a text encoder would give the model)."""
    return np.random.default_rng(100 + seed).normal(size=(tokens, dim)).astype(np.float32)


# ----------------------------------------------------------------------------- training runs
REPO = Path(__file__).resolve().parents[1]


def _env(devices=1):
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(REPO),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return env


def _optim(**kw):
    base = dict(
        learning_rate=1e-4,
        aux_learning_rate=1e-3,
        grad_clip_norm=1.0,
        epochs=50,
        decay_epochs=(45, 48),
        decay_factor=0.1,
        train_images=100,
    )
    return ml_collections.ConfigDict({**base, **kw})


def tower_sizes(width: int, ffn: int, layers: int, heads: int, **fields) -> dict:
    """A tiny transformer tower's config fields, in transformers' names."""
    sizes = dict(hidden_size=width, intermediate_size=ffn, num_hidden_layers=layers)
    return dict(sizes, num_attention_heads=heads, **fields)


def _train_cmd(workdir, *overrides):
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        f"{REPO}/configs/small.py:tiny",
        "--workdir",
        str(workdir),
        *overrides,
    ]


def _run_train(workdir, *overrides, env=None, timeout=600, **run_kw) -> subprocess.CompletedProcess:
    """train.py on the tiny config in a new process, run to its end, its output captured."""
    cmd = _train_cmd(workdir, *overrides)
    return subprocess.run(
        cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout, **run_kw
    )


def _python(code: str, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -c code args...` in a new process started in the repository, output captured."""
    cmd = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _finished_steps(workdir):
    ckpts = Path(workdir) / "checkpoints"
    return (
        sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []
    )


def _start_and_signal(cmd, env, workdir, sig, after_step):
    """Starts a run, sends `sig` once a checkpoint at >= after_step is finalized."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(s >= after_step for s in _finished_steps(workdir)):
                proc.send_signal(sig)
                break
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _restorable_steps(workdir):
    from tgic_jax.train import checkpoint as ckpt_lib

    steps = []
    for step in _finished_steps(workdir):
        params, restored_step = ckpt_lib.restore_train_params(workdir, step)
        assert restored_step == step
        assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params))
        steps.append(step)
    return steps


def _tiny_workdir_with_checkpoints(workdir, steps, nan_steps=()):
    """A workdir as the tiny config leaves it, with checkpoints of a fresh state at `steps`.

    Those in `nan_steps` hold NaN parameters (as runs before the non-finite stop saved).
    """
    from configs import small
    from tgic_jax.checkpoints import inference
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import checkpoint as ckpt_lib
    from tgic_jax.train import config_checks

    config = small.get_config("tiny")
    workdir.mkdir(parents=True)
    config_checks.record_config(config, inference.as_path(workdir), {})
    model = TACO(ModelConfig.from_config(config.model))
    optimizer = optim.make_optimizer(config.optim)
    state = train_state.create_train_state(model, optimizer, seed=0)
    manager = ckpt_lib.train_checkpoint_manager(workdir, 1, 10, use_async=False)
    for step in steps:
        saved = state.replace(step=jnp.int32(step))
        if step in nan_steps:
            saved = saved.replace(params=jax.tree_util.tree_map(lambda a: a * np.nan, state.params))
        ckpt_lib.save_train_state(manager, step, saved, force=True)
    manager.close()


def _damage(step_dir: Path) -> None:
    """Truncates the largest file of a checkpoint to half (a disk that failed mid-write)."""
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
