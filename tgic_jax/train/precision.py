"""Which precision a config's numerics get on this backend (no backend lacks what it asks).

`loss.lpips_float64=True` (configs/taco.py) evaluates LPIPS's network in float64 so that
its ReLU / max-pool near-ties are decided as PyTorch decides them (evaluation/lpips.py).
CPUs and GPUs compute float64 natively; TPUs have no float64 unit (XLA emulates it with
several float32 operations, when it lowers at all), so there LPIPS falls back to float32,
chosen once at start and logged. Its measured effect on the loss-parity fixture is in
docs/BENCHMARKS.md ("LPIPS precision").
"""

from __future__ import annotations

from tgic_jax.config import LossConfig

# Backends with native float64 arithmetic (jax.default_backend() names).
FLOAT64_PLATFORMS = ("cpu", "gpu", "cuda", "rocm")


def supports_float64(platform: str) -> bool:
    """True where `platform` computes float64 natively (CPU, GPU), False on TPU."""
    return platform.lower() in FLOAT64_PLATFORMS


def _platform(platform: str | None) -> str:
    if platform is not None:
        return platform
    import jax

    return jax.default_backend()


def lpips_float64(loss_config, platform: str | None = None) -> bool:
    """Whether LPIPS runs in float64: the config asks for it and the backend has it."""
    asked = bool(LossConfig.from_config(loss_config).lpips_float64)
    return asked and supports_float64(_platform(platform))


def lpips_precision(loss_config, platform: str | None = None) -> str:
    """What `tgic env` shows: 'float64', 'float32', 'float32 (... asked ...)' or 'not used'."""
    loss_config = LossConfig.from_config(loss_config)
    if float(loss_config.k_p) <= 0:
        return "not used (loss.k_p = 0)"
    platform = _platform(platform)
    if lpips_float64(loss_config, platform):
        return "float64"
    if bool(loss_config.lpips_float64):
        return f"float32 (loss.lpips_float64 asks float64, which {platform} lacks)"
    return "float32"
