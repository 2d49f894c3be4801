r"""Train-step throughput and peak memory of the paper-size TACO on this machine.

Two cases, each in its own process (so that peak RSS belongs to one case):
  full: N=192, M=320, batch 8, 256x256, every loss term (rate, MSE, LPIPS-Alex, CLIP joint).
        CLIP: the real ViT-B/32 when `--clip_path` loads offline, else a tiny random CLIP
        of the same interface (the report says which).
  rd:   rate + MSE only, batch 2, 256x256: like-for-like with the authors' PyTorch step
        (2.3-3.4 s per step on a 2-core machine).
Text states are random [B, 38, 512] (the frozen text tower runs on the host; see
tgic_jax/model/text_encoders.py for its cost). Run: python benchmarks/train.py [--steps 3]
[--compute_dtype bfloat16]. On a GPU or TPU it runs unchanged and adds MFU (FLOPs per step
from XLA's cost analysis over the device's bfloat16 peak, `tgic_jax/train/throughput.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tiny_clip():
    from tgic_jax.model.clip import clip_config, random_clip

    sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    config = clip_config(sizes, dict(sizes, image_size=224, patch_size=32), projection_dim=512)
    return random_clip(config, seed=0)


def auto_mesh_ok(mesh) -> bool:
    """False when `mesh` has Explicit axes (sharding in types), which the step cannot trace."""
    types = getattr(mesh, "axis_types", ())
    return not any("Explicit" in str(t) for t in types)


def run_case(case: str, steps: int, clip_path: str, compute_dtype: str = "float32") -> dict:
    """Times `steps` train steps after a warm-up one; returns the figures."""
    import jax
    import ml_collections
    import numpy as np

    sys.path.insert(0, str(REPO))
    from configs.taco import get_config
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import losses, optim, sharding, throughput, train_state, train_step

    config = get_config("lmbda=0.0004")
    config.model.compute_dtype = compute_dtype
    batch = 8 if case == "full" else 2
    clip_model, clip_note = None, "none"
    if case == "rd":
        config.loss.k_p, config.loss.k_j = 0.0, 0.0
    else:
        try:
            clip_model, clip_note = losses.build_clip(clip_path), f"real ({clip_path})"
        except Exception as err:  # noqa: BLE001 - offline: fall back, and say so
            clip_model = _tiny_clip()
            clip_note = f"tiny random CLIP (real weights unavailable: {type(err).__name__})"
    config.input.batch_size_per_device = batch
    config.loss.joint_group_size = min(8, batch)  # the joint term's groups tile the batch
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1)))
    if not auto_mesh_ok(mesh):
        # jax >= 0.7's jax.make_mesh gives Explicit axes; the step's ConvTranspose reshape
        # then fails to trace (ShardingTypeError). Same one-device step on an Auto mesh.
        mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names)
    model = TACO(ModelConfig.from_config(config.model))
    loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
    frozen = sharding.put_replicated(frozen, mesh)
    optimizer = optim.make_optimizer(config.optim)
    state, shardings, _ = train_state.init_sharded_state(model, optimizer, 0, mesh)
    step = train_step.jit_train_step(
        train_step.make_train_step(model, loss_fn, optimizer), mesh, shardings
    )
    lr = np.float32(config.optim.learning_rate)
    rng = np.random.default_rng(0)
    host = {
        "image": rng.random((batch, 256, 256, 3), np.float32),
        "text": rng.standard_normal((batch, 38, 512), np.float32),
    }
    if config.loss.k_j > 0:
        emb = rng.standard_normal((batch, 512)).astype(np.float32)
        host["clip_text"] = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    data = sharding.make_global_batch(mesh, host)
    t0 = time.perf_counter()
    compiled = step.lower(state, frozen, data, lr).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, frozen, data, lr)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, frozen, data, lr)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    flops = throughput.compiled_flops(compiled)
    peak = throughput.peak_flops(jax.devices()[0].device_kind)
    memory = throughput.compiled_memory(compiled)
    return {
        "case": case,
        "batch": batch,
        "image": "256x256",
        "terms": "rate+MSE" if case == "rd" else "rate+MSE+LPIPS+CLIP",
        "clip": clip_note,
        "compile_s": round(compile_s, 1),
        "step_s_median": round(median, 3),
        "step_s_all": [round(t, 3) for t in times],
        "images_per_second": round(batch / median, 3),
        "ms_per_image": round(1e3 * median / batch, 1),
        "compute_dtype": compute_dtype,
        "gflop_per_step": None if flops is None else round(flops / 1e9, 1),
        "mfu": None if not (flops and peak) else round(flops / median / peak, 4),
        "xla_memory_gib": None if memory is None else round(memory["total"] / 2**30, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loss": float(metrics["loss"]),
        "devices": f"{jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPUs",
    }


def main() -> None:
    """Runs each case in a fresh process and prints one JSON line per case."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--cases", default="rd,full")
    p.add_argument("--clip_path", default="openai/clip-vit-base-patch32")
    p.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case here
    args = p.parse_args()
    if args.case:
        result = run_case(args.case, args.steps, args.clip_path, args.compute_dtype)
        print("RESULT " + json.dumps(result), flush=True)
        return
    env = dict(
        os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1")
    )
    for case in args.cases.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--steps",
            str(args.steps),
            "--clip_path",
            args.clip_path,
            "--compute_dtype",
            args.compute_dtype,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"{case}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        r = json.loads(lines[-1][len("RESULT ") :])
        print(
            f"{case}: batch {r['batch']} {r['image']} [{r['terms']}; CLIP: {r['clip']}] "
            f"step {r['step_s_median']} s (median of {args.steps}), "
            f"{r['images_per_second']} images/s = {r['ms_per_image']} ms per image, "
            f"MFU {r['mfu'] if r['mfu'] is not None else 'n/a (no known peak)'}, "
            f"{r['gflop_per_step']} GFLOP per step, {r['compute_dtype']}, "
            f"XLA memory {r['xla_memory_gib']} GiB, peak RSS {r['peak_rss_gib']} GiB, "
            f"compile {r['compile_s']} s, {r['devices']}"
        )
        print(json.dumps(r))


if __name__ == "__main__":
    main()
