r"""How far float round-off moves the demo: its whole schedule under several draws.

    python benchmarks/demo_spread.py --out /tmp/spread [--draws shipped,avx2,text:1,text:2]

On one CPU and stack the demo repeats itself bit for bit; on another CPU the arithmetic is
done in another order, and hundreds of steps on 12 images grow that round-off into another
model. This script makes such draws on one machine and compares each with JPEG at the same
rate (the demo's bar: better LPIPS, PSNR within 0.5 dB). Each draw is a whole
`python -m tgic_jax.cli.demo --retrain` in a subprocess, in `OUT/<draw>`:

  shipped   the demo as it is
  avx2      XLA limited to AVX2 (`--xla_cpu_max_isa=AVX2`): the vector width of a CPU
            without AVX-512, so other summation orders
  text:K    the MiniLM text states moved by 4e-6 x a fixed pattern (seed K): the size of the
            difference between two correct text towers (ours and transformers' FlaxBertModel)
  loaded    the demo as it is, with a CPU-heavy process on every core beside it for the whole
            run: not a draw but a check that load changes the time and nothing else (with
            `shipped` in the same call, the two must agree within `demo.ROUND_OFF`)

A draw whose `OUT/<draw>/REPORT.json` exists is read, not run again (delete it to rerun).
Prints one row per draw, then the spread (and shipped vs loaded; exit 1 if they differ). A
draw takes the demo's time (~11 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in the draw's subprocess: the demo, with the text tower's states moved by a pattern.
_TEXT_DRAW = r"""
import dataclasses, sys
import jax.numpy as jnp
import tgic_jax.model.text_encoders as te

seed, load = float(sys.argv[1]), te.load_minilm

def load_moved(path="", max_length=te.MAX_LENGTH):
    enc = load(path, max_length)
    forward = enc._forward
    def moved(params, input_ids, attention_mask):
        states = forward(params, input_ids, attention_mask)
        i = jnp.arange(states.size, dtype=jnp.float32)
        return states + 4e-6 * jnp.sin(i * 12.9898 + seed).reshape(states.shape)
    return dataclasses.replace(enc, _forward=moved)

te.load_minilm = load_moved
from tgic_jax.cli import demo
sys.exit(demo.main(sys.argv[2:]))
"""

# The `loaded` draw's neighbours: one single-threaded matrix-product loop per core.
_LOAD = (
    "import numpy as np\na = np.random.rand(500, 500) / 500\nwhile True:\n    a = np.tanh(a @ a)\n"
)


def draw_command(draw: str, out: Path) -> tuple[list[str], dict]:
    """The subprocess and environment of one draw."""
    env = dict(os.environ)
    demo_args = ["--out", str(out), "--retrain"]
    if draw in ("shipped", "loaded"):
        return [sys.executable, "-m", "tgic_jax.cli.demo", *demo_args], env
    if draw == "avx2":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip()
        return [sys.executable, "-m", "tgic_jax.cli.demo", *demo_args], env
    if draw.startswith("text:"):
        seed = int(draw.split(":", 1)[1])
        return [sys.executable, "-c", _TEXT_DRAW, str(seed), *demo_args], env
    raise SystemExit(f"unknown draw {draw!r} (shipped, avx2, text:K, loaded)")


def run_draw(draw: str, out: Path) -> dict:
    """The means of one draw: read from OUT/<draw>/REPORT.json, or made by running the demo."""
    record = out / "REPORT.json"
    if not record.is_file():
        cmd, env = draw_command(draw, out)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        print(f"[spread] {draw}: running the demo -> {out} (log: {out}.log)", flush=True)
        neighbours = []
        if draw == "loaded":
            one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            neighbours = [
                subprocess.Popen([sys.executable, "-c", _LOAD], env=one_thread)
                for _ in range(os.cpu_count() or 2)
            ]
        try:
            with open(f"{out}.log", "w") as log:
                rc = subprocess.call(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        finally:
            for n in neighbours:
                n.kill()
                n.wait()
        if rc != 0 or not record.is_file():
            raise SystemExit(f"[spread] {draw}: the demo failed (exit {rc}); see {out}.log")
        print(f"[spread] {draw}: {(time.time() - t0) / 60:.1f} min", flush=True)
    return json.loads(record.read_text())["means"]


def main(argv=None) -> int:
    """Runs (or reads) each draw, then prints the table and the spread."""
    from tgic_jax.cli import demo  # its bar against JPEG, the one its report applies

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--draws", default="shipped,avx2,text:1,text:2")
    args = p.parse_args(argv)

    draws = [d.strip() for d in args.draws.split(",") if d.strip()]
    means = {d: run_draw(d, args.out / d.replace(":", "_")) for d in draws}
    print(
        "\n| draw | TACO bpp | dB | LPIPS | JPEG bpp | dB | LPIPS | dB vs JPEG | LPIPS vs JPEG "
        "| bar |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    passed = 0
    for d, m in means.items():
        d_db, d_lp = m["psnr"] - m["jpeg_psnr"], m["lpips"] - m["jpeg_lpips"]
        ok = demo.meets_jpeg_bar(d_db, d_lp)
        passed += ok
        print(
            f"| {d} | {m['bpp']:.4f} | {m['psnr']:.2f} | {m['lpips']:.4f} | {m['jpeg_bpp']:.4f} "
            f"| {m['jpeg_psnr']:.2f} | {m['jpeg_lpips']:.4f} | {d_db:+.2f} | {d_lp:+.4f} "
            f"| {'holds' if ok else 'fails'} |"
        )
    spread = {
        k: max(m[k] for m in means.values()) - min(m[k] for m in means.values())
        for k in ("bpp", "psnr", "lpips")
    }
    print(
        f"\nspread over {len(means)} draws: {spread['bpp']:.4f} bpp, {spread['psnr']:.2f} dB, "
        f"LPIPS {spread['lpips']:.4f}; the bar holds in {passed} of {len(means)}"
    )
    if "shipped" in means and "loaded" in means:
        a, b = means["shipped"], means["loaded"]
        off = {k: abs(a[k] - b[k]) for k in demo.ROUND_OFF}
        same = not demo.beyond_round_off(a, b)
        print(
            f"shipped vs loaded: {off['bpp']:.4f} bpp, {off['psnr']:.3f} dB, LPIPS "
            f"{off['lpips']:.4f} apart: "
            + ("within round-off" if same else "MORE than round-off")
            + f" ({demo.ROUND_OFF})"
        )
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
