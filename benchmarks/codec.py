r"""Encode / decode time of the paper-size model on one 768 x 512 Kodak image.

    python benchmarks/codec.py [--image data/kodak/kodim01.png] [--runs 3] [--small]
    python benchmarks/codec.py --authors-repo ../TACO --authors-python ../authors-venv/bin/python

With `--authors-repo DIR` (a checkout of the authors' PyTorch code, never vendored) the
same run times their codec beside ours: `benchmarks/authors_codec.py` runs in their
environment (`--authors-python`, a venv with torch and compressai 1.2.8), builds their
paper-size model from its own random init and hands us its state_dict, which we convert
(`convert.from_official_state_dict`): identical weights on both sides. Runs alternate
between the two (ours first on even runs, theirs first on odd ones) so that a busy machine
slows both alike; medians are printed with the ratio, and the two reconstructions are
compared.

With `--authors-state-dict IN.npz --images A.png B.png ...` it compares bytes only: both
codecs load that state_dict (e.g. `../shared/reference/parity/official_state_dict.npz`, a
trained small model), and each image is coded once on each side with the same random text;
prints our payload (and header) against the bytes of their rANS strings per image, and
whether the reconstructions agree.

Weights: random and well-scaled (He-normal kernels; the bottleneck at its Flax init
values), drawn from the shapes of `init_variables` via `jax.eval_shape` so the run does
not spend minutes compiling Flax's init. Timings do not depend on the weights' values,
except the entropy coding's share, which grows with the number of escaped (far-tail)
symbols: random weights escape far more than a trained model, so treat symbols/s as a
lower bound. Prints the median of `--runs` runs after one untimed warm-up (compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from tgic_jax import image_io
from tgic_jax.coding import codec
from tgic_jax.coding.tables import build_tables
from tgic_jax.model.taco import TACO, ModelConfig, init_variables

REPO = Path(__file__).resolve().parents[1]


def random_variables(model: TACO, seed: int = 0) -> dict:
    """Well-scaled random params with the model's tree, plus their coding tables."""
    shapes = flatten_dict(
        jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))["params"]
    )
    rng = np.random.default_rng(seed)
    params = {}
    for path, s in shapes.items():
        leaf, shape = path[-1], s.shape
        if leaf in ("kernel", "in_proj_weight"):
            fan_in = int(np.prod(shape[:-1])) if leaf == "kernel" else shape[-1]
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("bias", "in_proj_bias", "factors_0", "factors_1", "factors_2", "factors_3"):
            a = np.zeros(shape)
        elif leaf == "scale":
            a = np.ones(shape)
        elif leaf == "gamma":
            a = np.full(shape, 0.5)
        elif leaf.startswith("matrices_"):
            a = np.full(shape, np.log(np.expm1(1.0 / 10.0**0.2 / shape[1])))
        elif leaf.startswith("biases_"):
            a = rng.uniform(-0.5, 0.5, shape)
        elif leaf == "quantiles":
            a = np.broadcast_to(np.array([-10.0, 0.0, 10.0]), shape)
        else:
            raise ValueError(f"unknown parameter {path}")
        params[path] = np.asarray(a, np.float32)
    params = unflatten_dict(params)
    return {"params": params, "tables": build_tables(params)}


class AuthorsCodec:
    """The authors' codec in a worker process of their environment (one request per run)."""

    def __init__(self, repo: str, python: str, workdir: str, seed: int = 0, state_dict_in=None):
        self.state_dict = str(Path(workdir) / "authors_state_dict.npz")
        self._io = str(Path(workdir) / "authors_io.npz")
        extra = ["--state-dict-in", state_dict_in] if state_dict_in else []
        self._proc = subprocess.Popen(
            [
                python,
                str(REPO / "benchmarks" / "authors_codec.py"),
                "--repo",
                repo,
                "--state-dict",
                self.state_dict,
                "--seed",
                str(seed),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the authors' worker exited (see its stderr above)")
        return json.loads(line)

    def run(self, image: np.ndarray, text: np.ndarray) -> dict:
        """One compress + decompress: {"encode", "decode" (s), "y_bytes", "z_bytes", "x_hat"}."""
        x = np.ascontiguousarray(codec._pad(image).transpose(2, 0, 1)[None], np.float32)
        np.savez(self._io, x=x, text=text[None].astype(np.float32))
        self._proc.stdin.write(self._io + "\n")
        self._proc.stdin.flush()
        out = self._read()
        h, w = image.shape[:2]
        out["x_hat"] = np.load(self._io + ".x_hat.npy")[0].transpose(1, 2, 0)[:h, :w]
        return out

    def close(self) -> None:
        """Ends the worker."""
        self._proc.stdin.close()
        self._proc.wait(timeout=60)


def _summary(name: str, ours: list[float], theirs: list[float]) -> str:
    mo, mt = statistics.median(ours), statistics.median(theirs)
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    span = lambda t: f"{1e3 * min(t):.0f}-{1e3 * max(t):.0f}"
    return (
        f"{name}: ours {1e3 * mo:6.0f} ms (range {span(ours)}), authors {1e3 * mt:6.0f} ms "
        f"(range {span(theirs)}); ours / authors = {mo / mt:.2f}x "
        f"(per-run ratios {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


def compare_with_authors(args, image: np.ndarray) -> None:
    """Ours and the authors' codec on the same weights, image and text, runs interleaved."""
    from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file

    with tempfile.TemporaryDirectory() as tmp:
        theirs = AuthorsCodec(args.authors_repo, args.authors_python, tmp)
        try:
            model, variables = from_official_state_dict(load_state_dict_file(theirs.state_dict))
            variables = dict(variables, tables=build_tables(variables["params"]))
            text = np.random.default_rng(1).normal(size=(38, model.config.text_dim))
            text = text.astype(np.float32)
            h, w = image.shape[:2]
            print(
                f"paper-size model, the authors' random init (torch {theirs.info['torch']}, "
                f"{theirs.info['threads']} threads) converted to ours; image {w} x {h}; "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
            )
            coder = codec.Coder(model, variables)
            t0 = time.perf_counter()
            r = coder.encode([image], [text])[0]
            coder.decode(r.data)
            theirs.run(image, text)
            print(f"warm-up (our compile, their first run): {time.perf_counter() - t0:.1f} s")
            times = {k: [] for k in ("ours_enc", "ours_dec", "theirs_enc", "theirs_dec")}
            for run in range(args.runs):
                for side in ("ours", "theirs") if run % 2 == 0 else ("theirs", "ours"):
                    if side == "ours":
                        t0 = time.perf_counter()
                        r = coder.encode([image], [text])[0]
                        times["ours_enc"].append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        x_ours, _ = coder.decode(r.data)
                        times["ours_dec"].append(time.perf_counter() - t0)
                    else:
                        out = theirs.run(image, text)
                        times["theirs_enc"].append(out["encode"])
                        times["theirs_dec"].append(out["decode"])
        finally:
            theirs.close()
    ours_payload = sum(r.payload_bytes.values())
    their_payload = out["y_bytes"] + out["z_bytes"]
    diff = np.clip(x_ours, 0, 1).astype(np.float64) - out["x_hat"]
    psnr = -10 * np.log10(max(np.mean(diff**2), 1e-20))
    print(
        f"payload: ours {ours_payload} B + header {r.header_bytes} B, authors {their_payload} B "
        f"({ours_payload / their_payload:.4f}x); our decoded image vs theirs: "
        f"{psnr:.1f} dB PSNR, max |diff| {np.abs(diff).max():.2e}"
    )
    print(f"{args.runs} runs each, interleaved; load average now {os.getloadavg()[0]:.1f}")
    print(_summary("encode", times["ours_enc"], times["theirs_enc"]))
    print(_summary("decode", times["ours_dec"], times["theirs_dec"]))


def compare_bytes(args) -> None:
    """Bytes of ours and the authors' codec on one state_dict, image by image."""
    from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file

    model, variables = from_official_state_dict(load_state_dict_file(args.authors_state_dict))
    coder = codec.Coder(model, variables)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = AuthorsCodec(
            args.authors_repo, args.authors_python, tmp, state_dict_in=args.authors_state_dict
        )
        try:
            cfg = model.config
            print(
                f"model N={cfg.N} M={cfg.M} slices={list(cfg.slices)} "
                f"text {cfg.text_dim}; load average {os.getloadavg()[0]:.1f}"
            )
            total_ours = total_theirs = 0
            for path in args.images:
                image = image_io.load_image(path)[0]
                text = rng.normal(size=(38, model.config.text_dim)).astype(np.float32)
                r = coder.encode([image], [text])[0]
                x_ours = np.clip(coder.decode(r.data)[0], 0, 1).astype(np.float64)
                out = theirs.run(image, text)
                ours, their = sum(r.payload_bytes.values()), out["y_bytes"] + out["z_bytes"]
                total_ours, total_theirs = total_ours + ours, total_theirs + their
                h, w = image.shape[:2]
                diff = np.abs(x_ours - out["x_hat"])
                print(
                    f"{Path(path).name} {w}x{h}: ours {ours} B (y {r.payload_bytes['y']}, "
                    f"z {r.payload_bytes['z']}) + header {r.header_bytes} B; authors {their} B "
                    f"(y {out['y_bytes']}, z {out['z_bytes']}); ours/theirs {ours / their:.4f}x "
                    f"payload, {(ours + r.header_bytes) / their:.4f}x with header; "
                    f"max |x_hat diff| {diff.max():.1e}"
                )
            print(
                f"total: ours {total_ours} B, authors {total_theirs} B "
                f"({total_ours / total_theirs:.4f}x payload)"
            )
        finally:
            theirs.close()


def main() -> None:
    """Times encode and decode of one image (beside the authors' codec if asked); prints medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(REPO / "data" / "kodak" / "kodim01.png"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="tiny model (a smoke run)")
    ap.add_argument("--authors-repo", help="a checkout of the authors' TACO: time theirs too")
    ap.add_argument(
        "--authors-python",
        default=os.environ.get("AUTHORS_PYTHON", "python3"),
        help="python of an environment with torch and compressai==1.2.8",
    )
    ap.add_argument(
        "--authors-state-dict", help="with --authors-repo: compare bytes on these weights"
    )
    ap.add_argument("--images", nargs="+", help="with --authors-state-dict: the images to code")
    args = ap.parse_args()
    if args.authors_repo and args.authors_state_dict:
        compare_bytes(args)
        return
    if args.authors_repo:
        compare_with_authors(args, image_io.load_image(args.image)[0])
        return

    cfg = (
        ModelConfig(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16)
        if args.small
        else ModelConfig()
    )
    model = TACO(cfg)
    variables = random_variables(model)
    image, _ = image_io.load_image(args.image)
    text = np.random.default_rng(1).normal(size=(38, cfg.text_dim)).astype(np.float32)
    h, w = image.shape[:2]
    print(
        f"model N={cfg.N} M={cfg.M} slices={list(cfg.slices)}; image {w} x {h}; "
        f"device {jax.devices()[0].platform}, {os.cpu_count()} CPUs"
    )

    coder = codec.Coder(model, variables)
    t0 = time.perf_counter()
    r = coder.encode([image], [text])[0]
    coder.decode(r.data)
    print(f"warm-up (compile) encode + decode: {time.perf_counter() - t0:.1f} s")

    enc, dec = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = coder.encode([image], [text])[0]
        enc.append((time.perf_counter() - t0, r.timings))
        t0 = time.perf_counter()
        _, timings = coder.decode(r.data)
        dec.append((time.perf_counter() - t0, timings))

    symbols = (h + (-h % 64)) * (w + (-w % 64)) // 256 * cfg.M
    symbols += (h + (-h % 64)) * (w + (-w % 64)) // 4096 * cfg.N
    print(
        f"file: {len(r.data)} bytes = {r.bpp:.4f} bpp (payload {r.payload_bytes}, "
        f"header {r.header_bytes} B); {symbols} symbols"
    )
    for name, runs in (("encode", enc), ("decode", dec)):
        total = statistics.median(t for t, _ in runs)
        net = statistics.median(t["networks"] for _, t in runs)
        code = statistics.median(t["entropy_coding"] for _, t in runs)
        print(
            f"{name}: {1e3 * total:7.0f} ms  (networks {1e3 * net:6.0f} ms, entropy coding "
            f"{1e3 * code:5.0f} ms = {symbols / code / 1e6:5.2f} M symbols/s)"
        )


if __name__ == "__main__":
    main()
