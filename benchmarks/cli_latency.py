r"""Wall time of `tgic compress` / `tgic decompress` as a user runs them: cold and warm.

    python benchmarks/cli_latency.py [--image data/kodak/kodim01.png] [--runs 3]
                                     [--model paper|small] [--workdir /tmp/tgic_cli_latency]

Every call is a fresh process (`python -m tgic_jax.cli ...`), like a user's shell. "cold":
the JAX compilation cache folder is empty (first call after an install or a model change);
"warm": the second call, with the cache the first one left. Each run gets its own new cache
folder (TGIC_JAX_CACHE), so runs do not share anything but the OS's file cache. Prints the
median wall time of each case and, for the warm case, a breakdown from `--timings` (the
CLI's own stopwatch: imports, checkpoint, text, codec, writing) so every second is
accounted for.

The model: random well-scaled weights of the paper's size (N=192, M=320, D=512) or the
small demo size (configs/small.py: N=64, M=96, D=384), exported once to an inference
checkpoint under --workdir. Text comes from a .npy of token states (--text-embeddings) so the
numbers do not depend on which text encoder is installed; `--caption` adds the text encoder.

Afterwards one more compress and decompress run under `python -X importtime` (not
timed) and the script prints which of tensorflow / keras / torch each imported (none should).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "paper": dict(N=192, M=320, slices=(16, 16, 32, 64, 192), text_dim=512, heads=8),
    "small": dict(N=64, M=96, slices=(8, 8, 16, 16, 48), text_dim=384, heads=8),
}


def make_checkpoint(size: str, folder: Path) -> Path:
    """Exports random well-scaled weights of `size` to an inference checkpoint (once)."""
    path = folder / f"ckpt_{size}"
    if (path / "config.json").is_file():
        return path
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    from codec import random_variables  # benchmarks/codec.py

    from tgic_jax.checkpoints.inference import save_inference
    from tgic_jax.model.taco import TACO, ModelConfig

    cfg = ModelConfig(**SIZES[size])
    v = random_variables(TACO(cfg))
    save_inference(path, cfg, v["params"], tables=v["tables"], extra={"source": "random"})
    text = np.random.default_rng(1).normal(size=(38, cfg.text_dim)).astype(np.float32)
    np.save(folder / f"text_{size}.npy", text)
    return path


def run_cli(argv: list[str], cache: Path, importtime: bool = False) -> tuple[float, dict]:
    """(wall seconds, the CLI's --timings breakdown) of one fresh `tgic` process.

    With `importtime` the breakdown gets "imported": the heavy packages the process imported.
    """
    env = dict(os.environ, TGIC_JAX_CACHE=str(cache), PYTHONPATH=str(REPO))
    env.setdefault("JAX_PLATFORMS", "cpu")
    flags = ["-X", "importtime"] if importtime else []
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *flags, "-m", "tgic_jax.cli", *argv, "--timings", "--force"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"tgic {' '.join(argv)} failed:\n{proc.stderr}")
    timings = {}
    for line in proc.stderr.splitlines():
        if line.startswith("timings: "):
            timings = json.loads(line[len("timings: ") :])
    if importtime:  # lines "import time: self | cumulative | [spaces]package"
        top = {
            ln.rsplit("|", 1)[-1].strip()
            for ln in proc.stderr.splitlines()
            if ln.startswith("import time:")
        }
        timings["imported"] = sorted(top & {"tensorflow", "keras", "torch"})
    return wall, timings


def main() -> None:
    """Times the CLI's compress and decompress, cold and warm, and prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(REPO / "data" / "kodak" / "kodim01.png"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", choices=sorted(SIZES), default="paper")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tgic_cli_latency"))
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(args.model, work)
    text = work / f"text_{args.model}.npy"
    tgic = work / "k.tgic"
    png = work / "k.png"
    compress = [
        "compress",
        args.image,
        "--text-embeddings",
        str(text),
        "--checkpoint",
        str(ckpt),
        "-o",
        str(tgic),
    ]
    decompress = ["decompress", str(tgic), "--checkpoint", str(ckpt), "-o", str(png)]

    results: dict[str, list[tuple[float, dict]]] = {}
    for run in range(args.runs):
        cache = Path(tempfile.mkdtemp(prefix="jax_cache_", dir=work))
        for command, argv in (("compress", compress), ("decompress", decompress)):
            for state in ("cold", "warm"):
                wall, timings = run_cli(argv, cache)
                results.setdefault(f"{command} {state}", []).append((wall, timings))
                print(f"run {run + 1}: {command} {state}: {wall:.2f} s  {timings}", flush=True)
            if command == "compress":  # decompress's cold call must not see compress's cache
                cache = Path(tempfile.mkdtemp(prefix="jax_cache_", dir=work))

    for command, argv in (("compress", compress), ("decompress", decompress)):
        _, t = run_cli(argv, cache, importtime=True)
        print(
            f"{command} (one more call, -X importtime): imported {t['imported'] or 'none'} "
            "of tensorflow, keras, torch"
        )

    load = os.getloadavg()[0]
    print(
        f"\nmodel {args.model} ({SIZES[args.model]}), image {args.image}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f}; medians of {args.runs}"
    )
    for command in ("compress", "decompress"):
        cold = statistics.median(w for w, _ in results[f"{command} cold"])
        warm = statistics.median(w for w, _ in results[f"{command} warm"])
        print(f"{command}: cold {cold:.2f} s, warm {warm:.2f} s, warm/cold {warm / cold:.2f}")
        for state in ("cold", "warm"):
            runs = results[f"{command} {state}"]
            keys = list(runs[0][1])
            parts = ", ".join(
                f"{k} {statistics.median(t.get(k, 0.0) for _, t in runs):.2f}" for k in keys
            )
            # What the CLI's stopwatch cannot see: interpreter start, `import tgic_jax.cli`,
            # and the exit.
            outside = statistics.median(w - t.get("total", 0.0) for w, t in runs)
            print(f"  {state} breakdown (s): {parts}; start + exit {outside:.2f}")


if __name__ == "__main__":
    main()
