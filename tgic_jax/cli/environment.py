"""`tgic env`: what this host sees, the first thing to run on a new GPU host or TPU pod.

Reports the JAX platform and devices, this process's index among how many, the mesh and
batch sizes a training config would build, whether TensorFlow (an optional extra, for TFDS
input only) is installed and, if so, whether it can see a GPU after we hide them (it must
not: JAX owns the accelerators), the compilation-cache folders (the CLI's and train.py's),
the LPIPS precision the config gets on this backend, and the versions of the packages that
matter.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from tgic_jax.config import RunConfig

PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
    "libtpu",
    "flax",
    "optax",
    "orbax-checkpoint",
    "constriction",
    "tokenizers",
    "numpy",
    "tensorflow",
    "tensorflow-cpu",
)


def load_config(spec: str):
    """'configs/taco.py:lmbda=0.0004' -> that file's get_config('lmbda=0.0004')."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path}: no such file")
    module_spec = importlib.util.spec_from_file_location("tgic_env_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def package_versions() -> dict[str, str | None]:
    """Installed version of each of `PACKAGES` (None when not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def tensorflow_gpus() -> dict[str, Any]:
    """GPUs TensorFlow finds on the machine and those it may use after we hide them.

    {"version": None, "usable_gpus": 0} where TensorFlow is not installed (the usual case:
    only the `tfds` extra brings it).
    """
    if importlib.util.find_spec("tensorflow") is None:
        return {"version": None, "built_with_cuda": False, "physical_gpus": 0, "usable_gpus": 0}
    from tgic_jax.tf_import import import_tensorflow

    tf = import_tensorflow()  # what every TF user in the package does before touching TF

    return {
        "version": tf.__version__,
        "built_with_cuda": bool(tf.test.is_built_with_cuda()),
        "physical_gpus": len(tf.config.list_physical_devices("GPU")),
        # Logical devices exist only for visible GPUs: 0 means TF allocates no GPU memory.
        "usable_gpus": len(tf.config.list_logical_devices("GPU")),
    }


def mesh_for(config) -> dict[str, Any]:
    """The mesh and batch sizes `train_and_evaluate` would build for `config` here."""
    import jax

    from tgic_jax.train import optim, sharding

    run = RunConfig.from_config(config)
    mesh = sharding.make_mesh(run.mesh)
    global_batch = optim.global_batch_size(run, mesh.size)
    return {
        "axes": {name: int(size) for name, size in mesh.shape.items()},
        "batch_per_device": int(run.input.batch_size_per_device),
        "global_batch": global_batch,
        "batch_per_process": sharding.local_batch_size(global_batch, mesh),
        "processes": jax.process_count(),
    }


def describe(config=None) -> dict[str, Any]:
    """Everything `tgic env` prints, as a JSON-able dict."""
    import jax

    from tgic_jax.cli.main import training_cache_dir
    from tgic_jax.train import throughput

    devices = jax.devices()
    kind = devices[0].device_kind
    peak = throughput.peak_flops(kind)
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "jax": {
            "platform": jax.default_backend(),
            "device_kind": kind,
            "device_count": jax.device_count(),
            "local_device_count": jax.local_device_count(),
            "process_index": jax.process_index(),
            "process_count": jax.process_count(),
            "local_devices": [str(d) for d in jax.local_devices()],
            "peak_tflops_per_device": None if peak is None else peak / 1e12,
        },
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
        "train_compilation_cache_dir": training_cache_dir(),
        "env": {
            k: os.environ[k]
            for k in ("JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS")
            if k in os.environ
        },
        "tensorflow": tensorflow_gpus(),
        "packages": package_versions(),
    }
    if config is not None:
        from tgic_jax.train import precision

        info["mesh"] = mesh_for(config)
        info["lpips_precision"] = precision.lpips_precision(RunConfig.from_config(config).loss)
    return info


def format_report(info: dict[str, Any]) -> str:
    """A human-readable `tgic env` report."""
    j, tf = info["jax"], info["tensorflow"]
    peak = j["peak_tflops_per_device"]
    lines = [
        f"JAX platform:      {j['platform']} ({j['device_kind']}), "
        f"{j['device_count']} devices, {j['local_device_count']} on this process",
        f"process:           {j['process_index']} of {j['process_count']}",
        f"local devices:     {', '.join(j['local_devices'])}",
        "peak per device:   "
        + (f"{peak:.0f} TFLOP/s bf16 (MFU is logged)" if peak else "unknown (no MFU logged)"),
    ]
    if "mesh" in info:
        m = info["mesh"]
        axes = " x ".join(f"{k}={v}" for k, v in m["axes"].items())
        lines.append(
            f"mesh:              {axes}; batch {m['batch_per_device']} per device, "
            f"{m['global_batch']} global, {m['batch_per_process']} per process"
        )
    verdict = "OK" if tf["usable_gpus"] == 0 else "PROBLEM: TensorFlow would take GPU memory"
    if tf["version"] is None:
        lines.append("TensorFlow:        not installed (needed only for TFDS input: [tfds] extra)")
    else:
        lines.append(
            f"TensorFlow:        {tf['version']} sees {tf['physical_gpus']} GPU(s), may use "
            f"{tf['usable_gpus']} ({verdict})"
        )
    if "lpips_precision" in info:
        lines.append(f"LPIPS precision:   {info['lpips_precision']}")
    cache, train_cache = info["compilation_cache_dir"], info.get("train_compilation_cache_dir")
    lines.append("compilation cache: " + (cache or "off (tgic commands)"))
    lines.append(
        "train.py cache:    "
        + (train_cache or "off (TGIC_JAX_CACHE=off; compiled train steps are not kept)")
    )
    for key, value in info["env"].items():
        lines.append(f"{key + ':':<19}{value}")
    versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    lines.append(f"packages:          python {info['python']}, {versions}")
    return "\n".join(lines)


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `tgic env`."""
    p.add_argument(
        "--config",
        default=None,
        help="a training config, e.g. configs/taco.py:lmbda=0.0004, to show the mesh it builds",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_env(args: argparse.Namespace) -> int:
    """`tgic env` handler: 0, or 1 when TensorFlow could take GPU memory."""
    from tgic_jax.train import distributed

    distributed.maybe_initialize_distributed()  # on a pod: the same environment as train.py
    config = load_config(args.config) if args.config else None
    info = describe(config)
    print(json.dumps(info, indent=1) if args.json else format_report(info))
    return 0 if info["tensorflow"]["usable_gpus"] == 0 else 1
