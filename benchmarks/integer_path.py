r"""The integer entropy path against the float path: rate, quality and CPU time, one run.

    python benchmarks/integer_path.py [--images 24] [--paper-size] [--repeats 3] [--conv]
                                      [--checkpoint DIR]

(0) With --conv: one 5 x 5 convolution at the paper model's y resolution of a Kodak image
    (48 x 32 positions, 128 -> 224 channels, the channel context's widest) in float32,
    int8 x int8 -> int32, int16 and int32 operands, directly and as im2col + dot_general:
    median milliseconds of 5 (what chose int8 digits for the integer path).
(1) The parity fixture's trained small model (../shared/reference/parity: the authors' code,
    N=32, M=40, 2,500 steps), or the inference checkpoint --checkpoint (e.g. the demo's
    demo_output/checkpoint), both paths from the same parameters, on the Kodak images:
    real bpp and PSNR per path and their relative difference, and the median encode and
    decode seconds per image (after one warm-up image).
(2) With --paper-size: the paper-size model (N=192, M=320; random well-scaled weights, as
    tests/helpers.py builds them: timing only) on kodim01, median of --repeats encodes and
    decodes per path.
Prints one table per part (docs/BENCHMARKS.md, "The integer entropy path").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO.parent / "shared" / "reference" / "parity" / "official_state_dict.npz"
KODAK = REPO / "data" / "kodak"


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    mse = np.mean((np.clip(x, 0, 1).astype(np.float64) - ref) ** 2)
    return float(-10 * np.log10(mse))


def _coders(model, params):
    from tgic_jax.checkpoints.inference import integer_entropy_of
    from tgic_jax.coding import codec
    from tgic_jax.coding.tables import build_tables

    tables = build_tables(params)
    t0 = time.perf_counter()
    integer = integer_entropy_of(model, params, tables)
    calibration = time.perf_counter() - t0
    float_coder = codec.Coder(model, {"params": params, "tables": tables})
    integer_coder = codec.Coder(
        model, {"params": params, "tables": tables, "integer_entropy": integer}
    )
    return {"float": float_coder, "integer": integer_coder}, calibration


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def trained_model(count: int, checkpoint: str | None = None) -> None:
    """Part (1): bpp, PSNR and times of both paths on `count` Kodak images."""
    from tgic_jax import image_io
    from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file
    from tgic_jax.checkpoints.inference import load_inference

    if checkpoint:
        model, v, _ = load_inference(checkpoint)
    else:
        model, v = from_official_state_dict(load_state_dict_file(PARITY))
    coders, calibration = _coders(model, v["params"])
    names = sorted(json.loads((KODAK / "captions.json").read_text()))[:count]
    rng = np.random.default_rng(0)
    texts = [rng.normal(size=(38, model.config.text_dim)).astype(np.float32) for _ in names]
    rows = {k: {"bpp": [], "psnr": [], "encode": [], "decode": []} for k in coders}
    for n, (name, text) in enumerate(zip(names, texts, strict=True)):
        image = image_io.load_image(KODAK / name)[0]
        for path, coder in coders.items():
            if n == 0:  # compile both paths' programs outside the timing
                coder.decode(coder.encode([image], [text])[0].data)
            r, t_enc = _timed(lambda c=coder, x=image, t=text: c.encode([x], [t])[0])
            (x_hat, _), t_dec = _timed(lambda c=coder, d=r.data: c.decode(d))
            rows[path]["bpp"].append(r.bpp)
            rows[path]["psnr"].append(_psnr(x_hat, image))
            rows[path]["encode"].append(t_enc)
            rows[path]["decode"].append(t_dec)
        print(
            f"{name}: bpp float {rows['float']['bpp'][-1]:.4f} integer "
            f"{rows['integer']['bpp'][-1]:.4f}, PSNR {rows['float']['psnr'][-1]:.3f} / "
            f"{rows['integer']['psnr'][-1]:.3f} dB",
            flush=True,
        )
    f, i = rows["float"], rows["integer"]
    rate = sum(i["bpp"]) / sum(f["bpp"]) - 1
    print(
        f"\n{checkpoint or 'trained small model (parity fixture)'}, {len(names)} Kodak images, "
        f"calibration {calibration:.1f} s"
    )
    print("| path | mean bpp | mean PSNR dB | encode s (median) | decode s (median) |")
    print("| --- | --- | --- | --- | --- |")
    for path, r in rows.items():
        print(
            f"| {path} | {np.mean(r['bpp']):.4f} | {np.mean(r['psnr']):.3f} | "
            f"{statistics.median(r['encode']):.3f} | {statistics.median(r['decode']):.3f} |"
        )
    d_psnr = np.mean(i["psnr"]) - np.mean(f["psnr"])
    print(
        f"integer vs float: total rate {rate:+.3%}, PSNR {d_psnr:+.4f}"
        f" dB, encode x{statistics.median(i['encode']) / statistics.median(f['encode']):.2f}, "
        f"decode x{statistics.median(i['decode']) / statistics.median(f['decode']):.2f}"
    )


def paper_size(repeats: int) -> None:
    """Part (2): encode and decode seconds of kodim01 with the paper-size model."""
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import random_variables

    from tgic_jax import image_io
    from tgic_jax.model.taco import TACO, ModelConfig

    model = TACO(ModelConfig())
    params = random_variables(model, 0)["params"]
    coders, calibration = _coders(model, params)
    image = image_io.load_image(KODAK / "kodim01.png")[0]
    text = np.random.default_rng(0).normal(size=(38, 512)).astype(np.float32)
    print(f"\npaper-size model (random weights), kodim01, calibration {calibration:.1f} s")
    print("| path | encode s (median) | decode s (median) | decode networks s |")
    print("| --- | --- | --- | --- |")
    medians = {}
    for path, coder in coders.items():
        coder.decode(coder.encode([image], [text])[0].data)  # compile
        enc, dec, net = [], [], []
        for _ in range(repeats):
            r, t = _timed(lambda c=coder: c.encode([image], [text])[0])
            enc.append(t)
            (_, seconds), t = _timed(lambda c=coder, d=r.data: c.decode(d))
            dec.append(t)
            net.append(seconds["networks"])
        medians[path] = (statistics.median(enc), statistics.median(dec))
        print(
            f"| {path} | {medians[path][0]:.2f} | {medians[path][1]:.2f} | "
            f"{statistics.median(net):.2f} |"
        )
    (fe, fd), (ie, idd) = medians["float"], medians["integer"]
    print(f"integer vs float: encode x{ie / fe:.2f}, decode x{idd / fd:.2f}")


def conv_formulations() -> None:
    """Part (0): milliseconds of one convolution in each formulation."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dn = ("NHWC", "HWIO", "NHWC")
    rng = np.random.default_rng(0)
    x_np = rng.integers(-100, 100, (1, 32, 48, 128))
    w_np = rng.integers(-100, 100, (5, 5, 128, 224))

    def conv(x, w, acc):
        return lax.conv_general_dilated(
            x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=dn, preferred_element_type=acc
        )

    def im2col(x, w, acc):
        xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        cols = jnp.concatenate(
            [xp[:, i : i + 32, j : j + 48] for i in range(5) for j in range(5)], -1
        )
        return lax.dot_general(
            cols, w.reshape(-1, w.shape[-1]), (((3,), (0,)), ((), ())), preferred_element_type=acc
        )

    print("\n| formulation | operands | ms (median of 5) |")
    print("| --- | --- | --- |")
    for form, fn in (("conv_general_dilated", conv), ("im2col + dot_general", im2col)):
        for dtype, acc in (
            (jnp.float32, jnp.float32),
            (jnp.int8, jnp.int32),
            (jnp.int16, jnp.int32),
            (jnp.int32, jnp.int32),
        ):
            x, w = jnp.asarray(x_np, dtype), jnp.asarray(w_np, dtype)
            f = jax.jit(lambda a, b, fn=fn, acc=acc: fn(a, b, acc))
            f(x, w).block_until_ready()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                f(x, w).block_until_ready()
                times.append(time.perf_counter() - t0)
            print(
                f"| {form} | {np.dtype(dtype).name} -> {np.dtype(acc).name} | "
                f"{1e3 * statistics.median(times):.1f} |",
                flush=True,
            )


def main() -> None:
    """Runs the parts asked for and prints their tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--paper-size", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conv", action="store_true")
    p.add_argument("--checkpoint", default=None, help="an inference checkpoint to measure")
    args = p.parse_args()
    if args.conv:
        conv_formulations()
    if args.checkpoint or PARITY.is_file():
        trained_model(args.images, args.checkpoint)
    else:
        print(f"{PARITY} is absent: the trained-model part is skipped")
    if args.paper_size:
        paper_size(args.repeats)


if __name__ == "__main__":
    main()
