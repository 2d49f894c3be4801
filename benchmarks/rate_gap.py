r"""Real file bits against the likelihood estimate, and where the difference goes.

    python benchmarks/rate_gap.py --checkpoint DIR [--images kodim13.png ...]
    python benchmarks/rate_gap.py --parity ../shared/reference/parity

Per image and in total, header excluded:
  estimate  sum of -log2 likelihoods of y_hat and z_hat (what training minimizes);
  ideal     the code length under the 16-bit tables the coder actually uses (-log2 of each
            coded symbol's quantized probability; an escaped value counts the escape bin
            plus an Elias-gamma code of its magnitude, an approximation of the coder's);
  real      8 x payload bytes of the .tgic file.
So real / estimate = (ideal / estimate: scale-table rounding and 16-bit quantization)
x (real / ideal: the range coder's own overhead, flush bytes included).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from tgic_jax import image_io
from tgic_jax.coding import codec
from tgic_jax.coding import tables as coding_tables

REPO = Path(__file__).resolve().parents[1]


class _Recording(codec.RangeEncoder):
    """The codec's range encoder, also summing each symbol's ideal code length."""

    log: list = []

    def __init__(self, lookup):
        super().__init__(lookup)
        self._cdfs = coding_tables.split_lookup(lookup)
        self.ideal_bits, self.escapes = 0.0, 0
        _Recording.log.append(self)

    def encode(self, values, indexes):
        super().encode(values, indexes)
        values = np.asarray(values, np.int64).reshape(-1)
        indexes = np.asarray(indexes, np.int64).reshape(-1)
        for k in np.unique(indexes):
            cdf = self._cdfs[k].astype(np.int64)
            v = values[indexes == k]
            n = len(cdf) - 1  # symbols, the last one the escape
            p = np.diff(cdf) / float(1 << 16)
            inside = (v >= 0) & (v < n - 1)
            self.ideal_bits += float(-np.log2(p[v[inside]]).sum())
            out = v[~inside]
            self.escapes += len(out)
            magnitude = np.where(out < 0, -out, out - (n - 2)) + 1
            gamma = 2 * np.floor(np.log2(magnitude)) + 1
            self.ideal_bits += float(len(out) * -math.log2(p[-1]) + gamma.sum())


def measure(model, variables, image, text) -> dict:
    """Estimated, ideal (under the coder's tables) and real bits of one image, and its escapes."""
    _Recording.log.clear()
    coder = codec.Coder(model, variables)
    result = coder.encode([image], [text])[0]
    estimate = sum(coder.estimate(image, text)["bits_estimated"].values())
    return {
        "estimate": estimate,
        "ideal": sum(r.ideal_bits for r in _Recording.log),
        "real": 8.0 * sum(result.payload_bytes.values()),
        "escapes": sum(r.escapes for r in _Recording.log),
        "pixels": image.shape[0] * image.shape[1],
    }


def _line(name: str, m: dict) -> str:
    e, i, r = m["estimate"], m["ideal"], m["real"]
    return (
        f"{name:>14}: estimate {e / m['pixels']:.4f} bpp, ideal {i / m['pixels']:.4f}, "
        f"real {r / m['pixels']:.4f} | real/estimate {r / e - 1:+.3%} = tables "
        f"{i / e - 1:+.3%}, coder {r / i - 1:+.3%} | escapes {m['escapes']}"
    )


def main() -> None:
    """Prints the real-vs-estimated rate gap per image and in total."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="an inference checkpoint (tgic export / convert)")
    ap.add_argument("--images", nargs="*", help="Kodak file names (default: kodim13-24)")
    ap.add_argument("--parity", help="the parity fixture folder (authors' model and inputs)")
    args = ap.parse_args()
    codec.RangeEncoder = _Recording  # the codec looks the class up at call time

    cases = []
    if args.parity:
        from tgic_jax.checkpoints.authors import from_official_state_dict, load_state_dict_file

        folder = Path(args.parity)
        model, variables = from_official_state_dict(
            load_state_dict_file(folder / "official_state_dict.npz")
        )
        with np.load(folder / "io.npz") as f:
            x, texts = f["x"].transpose(0, 2, 3, 1), f["text"]
            theirs = f["compressai_bytes"].sum(axis=-1)
        for b in range(len(x)):
            cases.append((f"parity {b}", model, variables, x[b], texts[b], int(theirs[b])))
    if args.checkpoint:
        from tgic_jax.checkpoints.inference import load_inference
        from tgic_jax.model.text_encoders import build_text_encoder

        model, variables, config = load_inference(args.checkpoint)
        encoder = build_text_encoder(config.text)
        kodak = REPO / "data" / "kodak"
        captions = json.loads((kodak / "captions.json").read_text())
        names = args.images or [f"kodim{i:02d}.png" for i in range(13, 25)]
        for name in names:
            image, _ = image_io.load_image(kodak / name)
            text = encoder.encode([captions[name]])[0][0]
            cases.append((name, model, variables, image, text, None))
    if not cases:
        ap.error("give --checkpoint and/or --parity")

    total = {"estimate": 0.0, "ideal": 0.0, "real": 0.0, "escapes": 0, "pixels": 0}
    for name, model, variables, image, text, authors_bytes in cases:
        m = measure(model, variables, image, text)
        extra = ""
        if authors_bytes:
            extra = f" | authors' rANS {authors_bytes} B, ours {m['real'] / 8:.0f} B"
        print(_line(name, m) + extra, flush=True)
        for k in total:
            total[k] += m[k]
    print(_line("total", total))


if __name__ == "__main__":
    main()
