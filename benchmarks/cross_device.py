r"""Encode on this process's default device, decode on the CPU in another process, bit for bit.

    python benchmarks/cross_device.py [--paper-size] [--work DIR]

The integer entropy path's promise, checked where it matters: the encoder (on a GPU with
its default precision, TF32 convolutions included, when one is present) writes an
inference checkpoint (its integer path calibrated there) and two Kodak files; a second
process with JAX_PLATFORMS=cpu decodes them and must rebuild the encoder's y_hat bit for
bit (the image may differ in its last bits: g_s is float). Model: configs/small.py's sizes
(or the paper's with --paper-size) with random well-scaled weights (tests/helpers.py).
Prints one line per image and exits 1 on any difference. Section (f) of gpu_check.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("kodim01.png", "kodim23.png")


def encode(work: Path, paper_size: bool) -> None:
    """The encoder's side: checkpoint, files and the y_hat each file must decode to."""
    import jax

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import random_variables

    from tgic_jax import image_io
    from tgic_jax.checkpoints.inference import load_inference, save_inference
    from tgic_jax.coding import codec
    from tgic_jax.model.taco import TACO, ModelConfig

    config = ModelConfig() if paper_size else ModelConfig(64, 96, (8, 8, 16, 16, 48), 384, 8)
    params = random_variables(TACO(config), 0)["params"]
    save_inference(work / "checkpoint", config, params)
    model, variables, _ = load_inference(work / "checkpoint")
    coder = codec.Coder(model, variables)
    rng = np.random.default_rng(0)
    y_hats = {}
    for k, name in enumerate(IMAGES):
        image = image_io.load_image(REPO / "data" / "kodak" / name)[0]
        text = rng.normal(size=(38, config.text_dim)).astype(np.float32)
        r = coder.encode([image], [text], with_reconstruction=True)[0]
        (work / f"{k}.tgic").write_bytes(r.data)
        y_hats[f"y{k}"] = coder.decode_y_hat(r.data)
        y_hats[f"x{k}"] = r.x_hat
    np.savez(work / "encoder.npz", **y_hats)
    print(f"encoded on {jax.devices()[0].device_kind} ({jax.default_backend()})", flush=True)


def decode(work: Path) -> int:
    """The decoder's side, on the CPU: the same y_hat bit for bit, or exit 1."""
    from tgic_jax.checkpoints.inference import load_inference
    from tgic_jax.coding import codec

    model, variables, _ = load_inference(work / "checkpoint")
    coder = codec.Coder(model, variables)
    failed = 0
    with np.load(work / "encoder.npz") as ref:
        for k, name in enumerate(IMAGES):
            data = (work / f"{k}.tgic").read_bytes()
            try:
                y_hat = coder.decode_y_hat(data)
                x_hat = coder.decode(data)[0]
            except codec.BitstreamError as e:
                print(f"{name}: NOT DECODED on the CPU: {e}")
                failed += 1
                continue
            same = np.array_equal(y_hat, ref[f"y{k}"])
            diff = float(np.abs(x_hat - ref[f"x{k}"]).max())
            print(
                f"{name}: version {data[4]}, y_hat {'identical' if same else 'DIFFERENT'}, "
                f"image max difference {diff:.2e}"
            )
            failed += not same
    return 1 if failed else 0


def main() -> int:
    """Both sides, each in its own process (the decoder's on the CPU)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--paper-size", action="store_true")
    p.add_argument("--work", default=None, help="folder for the files (default: a temporary one)")
    p.add_argument("--side", choices=["encode", "decode"], default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side == "encode":
        encode(Path(a.work), a.paper_size)
        return 0
    if a.side == "decode":
        return decode(Path(a.work))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        me = [sys.executable, str(Path(__file__).resolve()), "--work", str(work)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        side = ["--paper-size"] if a.paper_size else []
        if subprocess.run([*me, "--side", "encode", *side], env=env).returncode:
            return 1
        cpu = dict(env, JAX_PLATFORMS="cpu")
        rc = subprocess.run([*me, "--side", "decode"], env=cpu).returncode
        print(f"cross-device: {'y_hat identical' if rc == 0 else 'FAILED'}", flush=True)
        return rc


if __name__ == "__main__":
    sys.exit(main())
