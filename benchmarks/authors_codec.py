r"""Times the authors' PyTorch TACO codec; run by `benchmarks/codec.py --authors-repo DIR`.

    AUTHORS_PYTHON benchmarks/authors_codec.py --repo DIR --state-dict OUT.npz [--seed 0]

Runs in the authors' environment (torch, compressai 1.2.8; never this package's), with
their checkout on sys.path: nothing of theirs is vendored here. Builds their paper-size
model (N=192, M=320, slices 16/16/32/64/192, text width 512) from their own random init,
fills its coder buffers with their `update(force=True)`, and writes the state_dict to
OUT.npz (our side converts the same weights). Then it serves one request per stdin line,
`IMAGE.npz` (arrays x [1, 3, H, W], text [1, T, 512]): compress, decompress, and one JSON
line back with the seconds of each and the bytes of their strings. Their modules import
`lpips` and `clip` at top level, compressai imports torchvision, and their decompress calls
`torch.cuda.synchronize`: all stubbed (CPU only; none of them is used by the codec).

With `--state-dict-in IN.npz` (e.g. the parity fixture's trained small model) their model
is built at the sizes of that state_dict (N, M, slices, text width read from its shapes;
8 attention heads, their only choice) and loads it, coder buffers included (compressai's
`load_state_dict` resizes them), instead of drawing a random init; OUT.npz is then a copy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types

import numpy as np


def _sizes(sd: dict) -> types.SimpleNamespace:
    """Their config from a state_dict's shapes (N, M, slices; text width apart)."""
    slices, i = [], 0
    while f"local_context.{i}.weight" in sd:
        slices.append(sd[f"local_context.{i}.weight"].shape[1])
        i += 1
    return types.SimpleNamespace(
        N=sd["entropy_bottleneck.quantiles"].shape[0],
        M=sum(slices),
        slice_num=len(slices),
        context_window=5,
        slice_ch=slices,
        quant="ste",
    )


def _load_their_model(repo: str, seed: int, state_dict_in: str | None = None):
    # Imported at top level by their utils (lpips, clip) and by compressai's registry
    # (torchvision.transforms, only to list its classes); none is used by the codec.
    for name in ("lpips", "clip", "torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.path.insert(0, repo)
    import torch

    torch.cuda.synchronize = lambda *a, **k: None  # their decompress calls it (CPU run)
    from models import TACO  # their package

    torch.manual_seed(seed)
    if state_dict_in:
        with np.load(state_dict_in) as f:
            sd = {k: torch.from_numpy(f[k]) for k in f.files}
        config = _sizes(sd)
        text_dim = next(
            v.shape[1] for k, v in sd.items() if k.endswith("text_feature_dim_proj.weight")
        )
        model = TACO(config, text_embedding_dim=text_dim)
        model.load_state_dict(sd)
        return torch, model.eval()
    config = types.SimpleNamespace(
        N=192, M=320, slice_num=5, context_window=5, slice_ch=[16, 16, 32, 64, 192], quant="ste"
    )
    model = TACO(config, text_embedding_dim=512).eval()
    model.update(force=True)
    return torch, model


def main() -> None:
    """Builds the authors' model, writes its state_dict, then times each request on stdin."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="a checkout of the authors' TACO code")
    ap.add_argument("--state-dict", required=True, help="where to write their weights (.npz)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state-dict-in", help="load these weights (.npz) instead of a random init")
    args = ap.parse_args()
    torch, model = _load_their_model(args.repo, args.seed, args.state_dict_in)
    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    if args.state_dict_in:  # what they loaded, as read back from their model
        assert all(np.array_equal(sd[k], v) for k, v in np.load(args.state_dict_in).items())
    np.savez(args.state_dict, **sd)
    print(
        json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}),
        flush=True,
    )
    for line in sys.stdin:
        path = line.strip()
        if not path:
            break
        with np.load(path) as f:
            x, text = torch.from_numpy(f["x"]), torch.from_numpy(f["text"])
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.compress(x, text)
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec = model.decompress(out["strings"], out["shape"])
            t_dec = time.perf_counter() - t0
        y_bytes = sum(len(s) for s in out["strings"][0])
        z_bytes = sum(len(s) for s in out["strings"][1])
        x_hat = rec["x_hat"].clamp(0, 1).numpy()
        np.save(path + ".x_hat.npy", x_hat)
        print(
            json.dumps({"encode": t_enc, "decode": t_dec, "y_bytes": y_bytes, "z_bytes": z_bytes}),
            flush=True,
        )


if __name__ == "__main__":
    main()
