r"""The integer entropy path's calibration, repeated in one process (per-epoch bests, exports).

    python benchmarks/calibration.py [--checkpoint demo_output/checkpoint] [--repeats 5]

Times `inference.integer_entropy_of` on one checkpoint's parameters `--repeats` times after a
first call, twice in this one run: with g_a's jitted analysis kept per model config (what the
package does) and with it dropped before every call (each calibration tracing and compiling
g_a again, as before it was kept). Prints the first call and the median of the later calls.
Without --checkpoint: the tiny test model (tests/helpers.py). docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _model_and_variables(checkpoint: str | None):
    from tgic_jax.checkpoints import inference

    if checkpoint:
        model, variables, _ = inference.load_inference(checkpoint)
        return model, variables
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import tiny_model

    return tiny_model(0)


def main() -> None:
    """Prints the table of both ways of calibrating."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from tgic_jax.checkpoints import inference
    from tgic_jax.coding import integer_path

    model, variables = _model_and_variables(args.checkpoint)
    print(f"model N={model.config.N} M={model.config.M}, {args.repeats} repeats after a first")
    print("| g_a's jitted analysis | first call s | median of later calls s |")
    print("| --- | --- | --- |")
    for kept in (False, True):
        integer_path._ANALYSES.clear()
        times = []
        for _ in range(1 + args.repeats):
            if not kept:
                integer_path._ANALYSES.clear()  # a new jit each call: traced and compiled again
            t0 = time.perf_counter()
            inference.integer_entropy_of(model, variables["params"], variables["tables"])
            times.append(time.perf_counter() - t0)
        label = "kept per model config" if kept else "made anew per call"
        print(f"| {label} | {times[0]:.2f} | {statistics.median(times[1:]):.2f} |")


if __name__ == "__main__":
    main()
