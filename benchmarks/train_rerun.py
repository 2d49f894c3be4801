r"""Time to the first step of a `train.py` rerun, with and without the compilation cache.

    python benchmarks/train_rerun.py [--config configs/small.py:tiny] [--repeats 2]

Each run is a fresh process on a fresh workdir (nothing to resume), so the time is what a
restarted pod job pays before it trains: imports, input, model init and the train step's
compilation, or its load from the cache. 'cold' runs fill an empty cache folder, 'warm'
ones read it, 'off' runs have --nocompile_cache. Prints one JSON line per run and the
medians (seconds from the process's start to its `[train] step 1/` line).
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


def first_step_seconds(config: str, workdir: Path, cache: Path, extra=()) -> float:
    """Seconds from starting train.py until it prints its first step's line."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(TGIC_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        config,
        "--workdir",
        str(workdir),
        "--config.total_steps=1",
        "--config.log_every_steps=1",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    seconds = None
    for line in proc.stdout:
        if seconds is None and line.startswith("[train] step 1/"):
            seconds = time.perf_counter() - t0
    if proc.wait() != 0 or seconds is None:
        raise RuntimeError(f"train.py failed: {' '.join(cmd)}")
    return seconds


def main() -> None:
    """Runs cold/warm/off `--repeats` times each; prints each run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/small.py:tiny")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"cold": [], "warm": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            cache = Path(tmp) / f"cache{i}"
            for kind, extra in (("cold", ()), ("warm", ()), ("off", ("--nocompile_cache",))):
                s = first_step_seconds(args.config, Path(tmp) / f"{kind}{i}", cache, extra)
                times[kind].append(s)
                print(json.dumps({"run": kind, "repeat": i, "first_step_s": round(s, 1)}))
    print(json.dumps({k: round(statistics.median(v), 1) for k, v in times.items()}))


if __name__ == "__main__":
    main()
