r"""Bytes per device of the paper-recipe train step, from XLA's memory analysis.

    python benchmarks/memory.py [--batches 8,16,32] [--clip_path openai/clip-vit-base-patch32]

The step of configs/taco.py (N=192, M=320, 256 x 256 crops) with every loss term (rate,
MSE, LPIPS-Alex, CLIP joint) is compiled for one device at each batch size per device and
never run; the state and batch are abstract shapes. CLIP is ViT-B/32: the real weights when
`--clip_path` loads offline, else a model of the same sizes with random weights (sizes, not
values, decide memory). Each batch compiles in its own process (minutes on a CPU) and
prints one JSON line; the numbers are those of the backend it runs on (compile on the
target device: XLA's CPU and GPU buffer assignments differ).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _clip(clip_path: str):
    from tgic_jax.model.clip import clip_config, random_clip
    from tgic_jax.train import losses

    try:
        return losses.build_clip(clip_path), f"real weights ({clip_path})"
    except Exception as err:  # noqa: BLE001 - offline: same sizes, random weights
        # The defaults are ViT-B/32's: text 512 x 12 layers, vision 768 x 12, patch 32.
        model = random_clip(clip_config({}, {}, projection_dim=512), seed=0)
        return model, f"ViT-B/32 sizes, random weights ({type(err).__name__} loading real ones)"


def run_batch(batch: int, clip_path: str, compute_dtype: str) -> dict:
    """Compiles the step at `batch` per device; returns its memory analysis."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    sys.path.insert(0, str(REPO))
    from configs.taco import get_config
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import losses, optim, sharding, throughput, train_state, train_step

    config = get_config("lmbda=0.0004")
    config.model.compute_dtype = compute_dtype
    config.input.batch_size_per_device = batch
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1)))
    model = TACO(ModelConfig.from_config(config.model))
    clip_model, clip_note = _clip(clip_path)
    loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
    optimizer = optim.make_optimizer(config.optim)
    shapes = jax.eval_shape(functools.partial(train_state.create_train_state, model, optimizer, 0))
    step = train_step.jit_train_step(
        train_step.make_train_step(model, loss_fn, optimizer),
        mesh,
        sharding.state_sharding(mesh, shapes),
    )

    def spec(shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    data = {
        "image": spec((batch, 256, 256, 3)),
        "text": spec((batch, 38, 512)),
        "clip_text": spec((batch, 512)),
    }
    frozen = jax.tree_util.tree_map(lambda a: spec(a.shape), frozen)
    t0 = time.perf_counter()
    compiled = step.lower(shapes, frozen, data, spec(())).compile()
    memory = throughput.compiled_memory(compiled) or {}
    return {
        "batch_per_device": batch,
        "compute_dtype": compute_dtype,
        "clip": clip_note,
        "compile_s": round(time.perf_counter() - t0, 1),
        "bytes": memory,
        "gib_total": round(memory.get("total", 0) / 2**30, 2),
        "flops_per_step": throughput.compiled_flops(compiled),
        "backend": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
    }


def main() -> None:
    """Runs each batch size in a fresh process; prints JSON lines and a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="8,16,32")
    p.add_argument("--clip_path", default="openai/clip-vit-base-patch32")
    p.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)  # internal: one batch here
    args = p.parse_args()
    if args.batch:
        result = run_batch(args.batch, args.clip_path, args.compute_dtype)
        print("RESULT " + json.dumps(result), flush=True)
        return
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1")
    )
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--batch",
            str(batch),
            "--clip_path",
            args.clip_path,
            "--compute_dtype",
            args.compute_dtype,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"batch {batch}: failed\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
            continue
        rows.append(json.loads(lines[-1][len("RESULT ") :]))
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        print(f"\n{rows[0]['backend']}, compute {args.compute_dtype}; CLIP: {rows[0]['clip']}")
        print("| batch / device | arguments | outputs (not aliased) | temporaries | total |")
        print("|---|---|---|---|---|")
        for r in rows:
            b = {k: v / 2**30 for k, v in r["bytes"].items()}
            print(
                f"| {r['batch_per_device']} | {b['arguments']:.2f} GiB | "
                f"{b['outputs'] - b['aliased']:.2f} GiB | {b['temporaries']:.2f} GiB | "
                f"{b['total']:.2f} GiB |"
            )


if __name__ == "__main__":
    main()
