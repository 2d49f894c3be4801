r"""float32 against bfloat16 transforms: the small config trained alike, tested on Kodak 13-24.

    python benchmarks/precision.py --dtype float32 --steps 200 --out /tmp/prec_f32
    python benchmarks/precision.py --dtype bfloat16 --steps 200 --out /tmp/prec_bf16

Each run trains configs/small.py (Kodak 1-12 crops, the same seed, so the same batches in
the same order) for `--steps` steps with `config.model.compute_dtype` set, exports the
inference checkpoint and codes Kodak 13-24 with their captions to real files. Prints one
JSON line: real bpp, PSNR and LPIPS (means over the 12 images), the train wall time and the
median step time of the last logged interval. The model is evaluated in the dtype it was
trained in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def _small_config():
    spec = importlib.util.spec_from_file_location("small_config", REPO / "configs" / "small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run(dtype: str, steps: int, out: Path) -> dict:
    """Trains, exports and evaluates one dtype; returns the figures."""
    import numpy as np

    from tgic_jax.evaluation import driver, sets
    from tgic_jax.minilm_fetch import ensure_minilm
    from tgic_jax.train import trainer

    ensure_minilm()
    shutil.rmtree(out, ignore_errors=True)
    config = _small_config()
    config.model.compute_dtype = dtype
    config.total_steps = int(steps)
    config.ckpt.every_steps = max(int(steps), 1)
    t0 = time.perf_counter()
    trainer.train_and_evaluate(config, out / "train")
    train_s = time.perf_counter() - t0
    ckpt = trainer.export_inference(out / "train", out / "checkpoint")

    full = sets.kodak_set(REPO / "data" / "kodak")
    held_out = sets.EvalSet(
        name="Kodak 13-24 (held out)",
        items=full.items[12:],
        caption_mode=full.caption_mode,
        caption_source=full.caption_source,
    )
    options = driver.EvalOptions(jpeg_qualities=(), save_recon=False, progress=False)
    codec = driver.load_codec(str(ckpt), label=f"small_{dtype}")
    driver.evaluate([codec], held_out, out / "eval", options)
    rows = json.loads((out / "eval" / "per_image.json").read_text())["rows"]
    rows = [r for r in rows if r["checkpoint"] == f"small_{dtype}" and r["variant"] == "correct"]
    keys = ("bpp", "bpp_estimated", "psnr", "ms_ssim", "lpips")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return {
        "dtype": dtype,
        "steps": int(steps),
        "images": len(rows),
        **mean,
        "train_wall_s": round(train_s, 1),
    }


def main() -> None:
    """Parses arguments, runs, prints one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    print("RESULT " + json.dumps(run(args.dtype, args.steps, Path(args.out))), flush=True)


if __name__ == "__main__":
    main()
