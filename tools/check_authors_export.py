"""Loads a `tgic export --format authors` file into the authors' own TACO and compares outputs.

Not a test (it needs torch, CompressAI 1.2.8 and a checkout of effl-lab/TACO); run by hand:

    # 1. in this repo's env: export, and our model's outputs on one image
    python tools/check_authors_export.py ours CKPT --export /tmp/m.pth.tar --io /tmp/io.npz
    # 2. in an env with torch + compressai==1.2.8 (numpy, scipy, einops, tqdm):
    python tools/check_authors_export.py theirs --taco-repo PATH/TO/TACO \
        --export /tmp/m.pth.tar --io /tmp/io.npz

Step 2 loads the file with their `load_state_dict` (strict), checks that their
`update(force=True)` rewrites the coder buffers to the values we exported, and compares
y, x_hat and the likelihoods of their eval-mode forward with ours, then codes the image
with their rANS coder and decodes it.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import types

import numpy as np


def run_ours(args) -> int:
    """Exports CKPT in the authors' format and writes our outputs on a test image."""
    import jax

    from tgic_jax.cli.export import export_authors, load_model_and_params
    from tgic_jax.coding import codec
    from tgic_jax.coding.tables import build_tables

    print(f"wrote {export_authors(args.checkpoint, args.export)}")
    model, params = load_model_and_params(args.checkpoint)
    variables = {"params": params, "tables": build_tables(params)}
    rng = np.random.default_rng(0)
    h, w = args.size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    x = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    x = np.clip(0.5 + 0.35 * x + 0.1 * rng.normal(size=(h, w, 3)), 0, 1).astype(np.float32)
    text = rng.normal(size=(38, model.config.text_dim)).astype(np.float32)
    with jax.default_matmul_precision("float32"):
        out = jax.jit(model.apply)(variables, x[None], text[None])
    nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)
    data = codec.Coder(model, variables).encode([x], [text])[0].data
    np.savez(
        args.io,
        x=nchw(x[None]),
        text=text[None],
        y=nchw(out["y"]),
        x_hat=nchw(out["x_hat"]),
        y_likelihoods=nchw(out["likelihoods"]["y"]),
        z_likelihoods=nchw(out["likelihoods"]["z"]),
        tgic_bytes=np.int64(len(data)),
    )
    print(f"wrote {args.io} ({h}x{w}, our .tgic file: {len(data)} bytes)")
    return 0


class _Dummy:
    """Stands for any class, function or decorator of a stubbed module."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __call__(self, *args, **kwargs):
        return args[0] if args else self


class _Stub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for CompressAI's dataset-only imports (torchvision, torch_geometric)."""

    def __init__(self, prefixes):
        self.prefixes = prefixes

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.prefixes:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: _Dummy
        return module

    def exec_module(self, module):
        pass


def _load_their_model(taco_repo: str, state_dict: dict):
    import torch

    missing = [m for m in ("torchvision", "torch_geometric") if _absent(m)]
    sys.meta_path.insert(0, _Stub(missing))
    sys.path.insert(0, taco_repo)
    from models.taco import TACO

    slices, i = [], 0
    while f"local_context.{i}.weight" in state_dict:
        slices.append(int(state_dict[f"local_context.{i}.weight"].shape[1]))
        i += 1
    config = types.SimpleNamespace(
        N=int(state_dict["g_a.analysis_transform.0.weight"].shape[0]),
        M=int(state_dict["g_a.analysis_transform.16.weight"].shape[0]),
        slice_num=len(slices),
        slice_ch=slices,
        quant="ste",
    )
    text_dim = int(state_dict["g_a.analysis_transform.8.text_feature_dim_proj.weight"].shape[1])
    model = TACO(config, text_embedding_dim=text_dim)
    model.load_state_dict(state_dict)  # theirs: resizes the coder buffers, then strict=True
    # and once more through torch's own strict check, to see the key lists.
    result = torch.nn.Module.load_state_dict(model, state_dict, strict=True)
    print(
        f"their TACO N={config.N} M={config.M} slices={slices} text={text_dim}: "
        f"strict load ok ({len(state_dict)} tensors, missing {len(result.missing_keys)}, "
        f"unexpected {len(result.unexpected_keys)})"
    )
    return model.eval()


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def run_theirs(args) -> int:
    """Loads the export into the authors' model and compares with `ours` outputs."""
    import torch

    if args.export.endswith(".npz"):
        with np.load(args.export) as f:
            sd = {k: torch.from_numpy(f[k]) for k in f.files}
    else:
        sd = torch.load(args.export, map_location="cpu", weights_only=True)["state_dict"]
    model = _load_their_model(args.taco_repo, sd)
    torch.cuda.synchronize = lambda *a, **k: None  # their decompress assumes a GPU

    state = model.state_dict()
    exported = {k: state[k].clone() for k in state if "._" in k or k.endswith("scale_table")}
    model.update(force=True)
    for k, v in exported.items():
        now = model.state_dict()[k]
        if now.shape == v.shape and bool(torch.equal(now, v)):
            verdict = "unchanged"
        elif now.shape == v.shape:
            d = (now.double() - v.double()).abs()
            verdict = f"max |change| {float(d.max()):.3g} in {int((d > 0).sum())} of {d.numel()}"
        else:
            verdict = f"CHANGED shape {tuple(v.shape)} -> {tuple(now.shape)}"
        print(f"  after their update(force=True): {k} {verdict}")

    io = dict(np.load(args.io))
    x, text = torch.from_numpy(io["x"]), torch.from_numpy(io["text"])
    with torch.no_grad():
        y = model.g_a(x, text)
        out = model(x, text)
        enc = model.compress(x, text)
        dec = model.decompress(enc["strings"], enc["shape"], text)
    theirs = {
        "y": y,
        "x_hat": out["x_hat"],
        "y_likelihoods": out["likelihoods"]["y_likelihoods"],
        "z_likelihoods": out["likelihoods"]["z_likelihoods"],
    }
    for k, v in theirs.items():
        d = np.abs(v.numpy() - io[k])
        print(f"  {k:14s} max |theirs - ours| = {d.max():.3g}  mean = {d.mean():.3g}")
    mse = float(np.mean((dec["x_hat"].clamp(0, 1).numpy() - io["x_hat"].clip(0, 1)) ** 2))
    n_bytes = len(enc["strings"][0][0]) + len(enc["strings"][1][0])
    print(
        f"  their rANS: {n_bytes} bytes (y + z strings; our .tgic file {int(io['tgic_bytes'])}"
        f" bytes with header); their decode vs our x_hat: PSNR {-10 * np.log10(mse):.1f} dB"
    )
    return 0


def main(argv=None) -> int:
    """Command line: `ours` (this repo's env) then `theirs` (torch + CompressAI env)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="side", required=True)
    o = sub.add_parser("ours")
    o.add_argument("checkpoint", help="inference checkpoint or training workdir")
    o.add_argument("--export", required=True, help=".pth.tar (needs torch) or .npz to write")
    o.add_argument("--io", required=True, help=".npz of our outputs to write")
    o.add_argument("--size", type=int, nargs=2, default=(128, 192), help="image H W")
    t = sub.add_parser("theirs")
    t.add_argument("--taco-repo", required=True, help="checkout of effl-lab/TACO")
    t.add_argument("--export", required=True)
    t.add_argument("--io", required=True)
    args = p.parse_args(argv)
    return run_ours(args) if args.side == "ours" else run_theirs(args)


if __name__ == "__main__":
    sys.exit(main())
