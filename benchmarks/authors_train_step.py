r"""Times the authors' PyTorch training step (rate + MSE) on this machine's GPU.

    python benchmarks/authors_train_step.py --repo DIR [--batch 8] [--steps 10] [--cpu]

Their checkout on sys.path (never vendored) and compressai importable (carried along on a
GPU image; PyTorch is there). Their paper-size model (`authors_codec._load_their_model`),
256 x 256 random images, random [B, 38, 512] text states, Adam; the loss is their
rate-distortion part, lmbda * 255^2 * MSE + bpp, plus the auxiliary loss: their LPIPS and
CLIP terms need weights downloaded at run time, so the like-for-like figure of ours is the
rate + MSE step. Prints one line and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    """Builds their model, runs two warm-up steps, times `--steps` steps."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args()
    import torch

    sync = torch.cuda.synchronize  # their loader stubs it out (a CPU run of theirs)
    from authors_codec import _load_their_model

    _, model = _load_their_model(a.repo, 0)
    device = "cpu" if a.cpu or not torch.cuda.is_available() else "cuda"
    model = model.to(device).train()
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=1e-4)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    x = torch.rand(a.batch, 3, 256, 256, device=device)
    text = torch.randn(a.batch, 38, 512, device=device)
    lmbda = 0.0004

    def step():
        opt.zero_grad()
        aux_opt.zero_grad()
        out = model(x, text)
        pixels = a.batch * 256 * 256
        bpp = sum(
            torch.log(lik).sum() / (-math.log(2) * pixels) for lik in out["likelihoods"].values()
        )
        loss = lmbda * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
        loss.backward()
        opt.step()
        aux = model.aux_loss()
        aux.backward()
        aux_opt.step()
        return float(loss)

    def wait():
        if device == "cuda":
            sync()

    for _ in range(2):
        step()
    wait()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        wait()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    r = {
        "batch": a.batch,
        "step_ms": round(1e3 * median, 1),
        "images_per_second": round(a.batch / median, 2),
        "loss": loss,
        "device": device,
        "peak_gib": None if peak is None else round(peak, 2),
    }
    print(
        f"authors' step (rate + MSE), batch {a.batch}: {r['images_per_second']} images/s, "
        f"{r['step_ms']} ms/step, peak {r['peak_gib']} GiB, {device}, torch {torch.__version__}"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
