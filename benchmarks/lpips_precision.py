r"""LPIPS in float64 against float32 on the loss-parity fixture (what a TPU run gets).

    python benchmarks/lpips_precision.py [--cases lpips_only full]

The paper config's loss (configs/taco.py) with `loss.lpips_float64` True and False, each
against the authors' criterion in ../shared/reference/loss_parity (tests/test_loss_parity.py):
the loss value, the gradient's norm and its projections on the fixture's 16 random
directions, as relative errors (projections relative to the gradient's norm, the test's
scale). One JSON line per (case, precision).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    """Prints the errors of each case in float64 and float32 LPIPS."""
    import test_loss_parity as parity

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["lpips_only", "full"])
    args = parser.parse_args()
    fixture = dict(np.load(parity.FIXTURE / "expected.npz"))
    seed = int(fixture["direction_seed"])
    directions = np.random.default_rng(seed).standard_normal((16, 16, 256, 256, 3), np.float32)
    for case in args.cases:
        for float64 in (True, False):
            config = parity._config(**parity.CASES[case])
            config.lpips_float64 = float64
            loss, metrics, grad = parity._value_and_grad(config, fixture)
            norm = float(np.linalg.norm(grad))
            proj = np.einsum("dbhwc,bhwc->d", directions, grad.astype(np.float32), dtype=np.float64)
            want_norm = float(fixture[f"{case}_grad_norm"])
            row = {
                "case": case,
                "lpips": "float64" if float64 else "float32",
                "loss_rel": abs(loss / float(fixture[f"{case}_value"]) - 1),
                "grad_norm_rel": abs(norm / want_norm - 1),
                "grad_proj_max_rel_to_norm": float(
                    np.max(np.abs(proj - fixture[f"{case}_grad_proj"])) / want_norm
                ),
                "lpips_rel": abs(float(metrics["lpips"]) / float(fixture["lpips_mean"]) - 1),
            }
            print(
                json.dumps(
                    {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in row.items()}
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
