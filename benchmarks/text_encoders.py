r"""Times the frozen text towers: a jitted batch forward of MiniLM-L6 and a ViT-B/32 CLIP text.

  python benchmarks/text_encoders.py

Median of 5 after warm-up, batch 8 x 38 tokens; the CLIP tower has random weights (the same
graph as openai/clip-vit-base-patch32's). The numbers quoted in tgic_jax/model/text_encoders.py's
docstring come from here. MiniLM is skipped (with a note) when it cannot be fetched.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from tgic_jax.model.text_encoders import MAX_LENGTH, load_minilm


def bench(batch: int = 8, repeats: int = 5) -> dict[str, float]:
    """Median seconds of a jitted batch forward for MiniLM and a ViT-B/32-sized CLIP text."""
    from tgic_jax.model.clip import clip_config, random_clip

    ids = np.ones((batch, MAX_LENGTH), np.int32)
    mask = np.ones((batch, MAX_LENGTH), np.int32)
    clip = random_clip(clip_config({}, None), seed=0)  # ViT-B/32 text defaults: 12 x 512
    towers = {
        "clip_text_vitb32": (
            lambda p, i, m: clip.text_features(p, i, m)["last_hidden_state"],
            clip.params,
        ),
    }
    try:
        minilm = load_minilm()
        towers["minilm"] = (minilm.apply, minilm.params)
    except RuntimeError as err:  # offline: time CLIP only
        print(f"MiniLM skipped: {err}", file=sys.stderr)
    out = {}
    for name, (fn, params) in towers.items():
        fn = jax.jit(fn)
        fn(params, ids, mask).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(params, ids, mask).block_until_ready()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    return out


if __name__ == "__main__":
    for key, seconds in bench().items():
        print(f"{key}: {seconds * 1e3:.1f} ms per batch of 8 x {MAX_LENGTH} tokens")
