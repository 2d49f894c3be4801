"""The model's networks as exported programs: what both sides of the codec run, kept on disk.

Determinism needs the encoder and the decoder to run the same XLA computation for every
network that feeds the entropy model. `Programs` traces each piece of TACO (`analysis`,
`hyper`, `anchor` / `nonanchor` per slice, `combine`, `synthesis`) once per input shape,
exports it with `jax.export`, and with a folder keeps the serialized program there so a new
process reads it instead of tracing the model again. `shared_programs` gives every `Coder`
of one model config in a process the same `Programs`. `coding/codec.py` is the only user.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from tgic_jax.coding import integer_path
from tgic_jax.files import write_atomic
from tgic_jax.model.taco import TACO, checkerboard_masks

__all__ = ["INTEGER_PROGRAMS", "Programs", "integer_scopes", "param_scopes", "shared_programs"]

# The integer entropy path's programs (`integer_path`): int32 in, int32 out, no float op.
INTEGER_PROGRAMS = ("hyper_int", "anchor_int", "nonanchor_int", "combine_int")


def _network_functions(model: TACO) -> dict:
    """The model's pieces as pure functions of (params, arrays); the slice index is static."""
    apply = model.apply

    def analysis(params, x, text):
        return apply({"params": params}, x, text, method="analysis")

    def hyper(params, z_sym, medians):
        z_hat = z_sym.astype(jnp.float32) + medians
        return apply({"params": params}, z_hat, method="hyper_synthesis")

    def anchor(i, params, hyper, y_hat_previous, thresholds):
        scales, means, ctx = apply(
            {"params": params}, i, hyper, list(y_hat_previous), method="anchor_params"
        )
        mask = _masks(hyper.shape)[0]
        return _indexes(scales, thresholds) * mask.astype(jnp.int32), means * mask, ctx

    def nonanchor(i, params, hyper, ctx, sym_a, means_a, thresholds):
        anchor_mask, non_anchor_mask = _masks(hyper.shape)
        y_hat_a = (sym_a.astype(jnp.float32) + means_a) * anchor_mask
        scales, means = apply({"params": params}, i, hyper, ctx, y_hat_a, method="nonanchor_params")
        idx = _indexes(scales, thresholds) * non_anchor_mask.astype(jnp.int32)
        return y_hat_a, idx, means * non_anchor_mask

    def combine(y_hat_a, sym_n, means_n):
        non_anchor_mask = _masks(y_hat_a.shape)[1]
        return y_hat_a + (sym_n.astype(jnp.float32) + means_n) * non_anchor_mask

    def synthesis(params, y_hat_slices):
        y_hat = jnp.concatenate(list(y_hat_slices), -1)
        return apply({"params": params}, y_hat, method="synthesis")

    config = model.config

    def hyper_int(ip, z_sym):
        return integer_path.hyper(config, ip, z_sym)

    def anchor_int(i, ip, hyper, y_in_previous):
        return integer_path.anchor(config, i, ip, hyper, y_in_previous)

    def nonanchor_int(i, ip, hyper, ctx, sym_a, mean_a):
        return integer_path.nonanchor(config, i, ip, hyper, ctx, sym_a, mean_a)

    def combine_int(i, ip, sym_a, mean_a, sym_n, mean_n):
        return integer_path.combine(i, ip, sym_a, mean_a, sym_n, mean_n)

    def synthesis_int(params, sym_slices, mean_slices):
        y_hat = jnp.concatenate(
            [integer_path.dequantize(s, m) for s, m in zip(sym_slices, mean_slices, strict=True)],
            -1,
        )
        return apply({"params": params}, y_hat, method="synthesis")

    return {
        "analysis": analysis,
        "hyper": hyper,
        "anchor": anchor,
        "nonanchor": nonanchor,
        "combine": combine,
        "synthesis": synthesis,
        "hyper_int": hyper_int,
        "anchor_int": anchor_int,
        "nonanchor_int": nonanchor_int,
        "combine_int": combine_int,
        "synthesis_int": synthesis_int,
    }


def _masks(shape) -> tuple[jax.Array, jax.Array]:
    anchor, non_anchor = checkerboard_masks(shape[1], shape[2])
    return jnp.asarray(anchor), jnp.asarray(non_anchor)


def _indexes(scales: jax.Array, thresholds: jax.Array) -> jax.Array:
    """Table index = the nearest scale-table entry in log scale (`scale_thresholds`)."""
    return jnp.searchsorted(thresholds, scales, side="left").astype(jnp.int32)


def param_scopes(name: str, i: int | None) -> tuple[str, ...]:
    """The top-level parameter collections program `name` reads (see TACO's methods).

    Each program gets only these: an exported program's inputs are deserialized one by
    one, and the full tree (276 arrays for the paper-size model) for each of the 16
    programs took 1.0 s of a warm encode. A missing collection fails at export (Flax
    raises on a parameter it cannot find), never silently.
    """
    return {
        "analysis": ("g_a", "h_a"),
        "hyper": ("h_s",),
        "anchor": (f"entropy_parameters_anchor_{i}",) + ((f"channel_context_{i}",) if i else ()),
        "nonanchor": (f"local_context_{i}", f"entropy_parameters_nonanchor_{i}"),
        "synthesis": ("g_s",),
        "synthesis_int": ("g_s",),
    }[name]


def integer_scopes(name: str, i: int | None) -> tuple[str, ...]:
    """The networks of `variables["integer_entropy"]` integer program `name` reads."""
    return {
        "hyper_int": ("h_s", "io"),
        "anchor_int": (f"entropy_parameters_anchor_{i}", "io")
        + ((f"channel_context_{i}",) if i else ()),
        "nonanchor_int": (f"local_context_{i}", f"entropy_parameters_nonanchor_{i}", "io"),
        "combine_int": ("io",),
    }[name]


class Programs:
    """The model's pieces compiled per input shape, each exported (`jax.export`) once.

    Both sides of the codec call the same exported programs, so they run the same XLA
    computation. With a `folder`, the serialized programs are kept there: a new process
    reads them instead of tracing the model again (tracing is most of a warm paper-size
    `tgic compress`'s fixed cost, docs/BENCHMARKS.md), and JAX's compilation cache then skips
    XLA's compile. A file is keyed by the program, its input shapes, the model's config
    (every field: a bfloat16 model's programs are not a float32 model's), the JAX / jaxlib /
    Flax versions, the backend and a digest of this package's source, so a changed model
    or upgrade never reads a stale program; an unreadable file is re-exported.
    """

    def __init__(self, model: TACO, folder: str | os.PathLike | None = None):
        self.model = model
        self.folder = Path(folder) if folder is not None else None
        self._functions = _network_functions(model)
        self._compiled: dict[tuple, Callable] = {}
        # Evaluation's estimate is not part of any bitstream: a plain jit is enough.
        self.forward = jax.jit(
            lambda params, x, text: _forward_outputs(model.apply({"params": params}, x, text))
        )

    def __call__(self, name: str, *args, i: int | None = None):
        """Runs program `name` (slice `i` for anchor / nonanchor) on `args`."""
        leaves, tree = jax.tree_util.tree_flatten(args)
        key = (name, i, tree, tuple((np.shape(a), np.asarray(a).dtype.str) for a in leaves))
        program = self._compiled.get(key)
        if program is None:
            program = self._compiled[key] = jax.jit(self._exported(key, args).call)
        return program(*args)

    def _exported(self, key: tuple, args) -> export.Exported:
        name, i = key[:2]
        path = None
        if self.folder is not None:
            digest = hashlib.sha256(repr((key, self.model.config, _build_key())).encode())
            path = self.folder / f"{name}{'' if i is None else i}-{digest.hexdigest()[:32]}.jaxexp"
            try:
                return export.deserialize(bytearray(path.read_bytes()))
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - a damaged or foreign file: export anew
                pass
        fn = self._functions[name] if i is None else partial(self._functions[name], i)
        exported = export.export(jax.jit(fn))(*args)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, bytes(exported.serialize()))
            except OSError:  # a read-only cache folder: run, just without keeping it
                pass
        return exported


def _forward_outputs(out: dict):
    return out["x_hat"], out["likelihoods"]


@functools.cache
def _build_key() -> tuple:
    """What else a traced program depends on: library versions, backend, our source."""
    import flax
    import jaxlib

    source = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for f in sorted(package.rglob("*.py")):
        source.update(f.relative_to(package).as_posix().encode() + f.read_bytes())
    return (
        jax.__version__,
        jaxlib.__version__,
        flax.__version__,
        jax.default_backend(),
        jax.devices()[0].device_kind,
        bool(jax.config.jax_enable_x64),
        source.hexdigest(),
    )


_SHARED_PROGRAMS: dict[tuple, Programs] = {}


def shared_programs(model: TACO, folder: str | os.PathLike | None = None) -> Programs:
    """The process's programs for one model config (a value key), shared by all its Coders."""
    key = (model.config, None if folder is None else str(folder))
    if key not in _SHARED_PROGRAMS:
        _SHARED_PROGRAMS[key] = Programs(model, folder)
    return _SHARED_PROGRAMS[key]
