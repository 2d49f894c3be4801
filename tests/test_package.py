"""The package as a whole: its layers import only downwards; `python -m tgic_jax.cli` runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _check_layers():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_layers", REPO / "tools" / "check_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_from_a_layer_above_it():
    assert _check_layers().violations(REPO / "tgic_jax") == []


def test_the_layer_check_names_an_upward_import_with_its_line(tmp_path):
    check = _check_layers()
    root = tmp_path / "tgic_jax"
    for sub in ("model", "evaluation", "train"):
        (root / sub).mkdir(parents=True)
    (root / "model" / "taco.py").write_text("import numpy\n\nfrom tgic_jax import image_io\n")
    (root / "evaluation" / "driver.py").write_text(
        "def f():\n    from tgic_jax.train import checkpoint\n"
    )
    (root / "train" / "trainer.py").write_text("from tgic_jax.evaluation import driver\n")
    assert check.violations(root) == [
        "tgic_jax/evaluation/driver.py:2: evaluation imports tgic_jax.train (train, above it)"
    ]
    assert check.main([str(root)]) == 1


def test_python_dash_m_tgic_jax_cli_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "tgic_jax.cli", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("compress", "decompress", "convert", "evaluate", "export", "env"):
        assert command in proc.stdout


def _base_dependencies(name: str = "tgic_jax") -> set[str]:
    """The distributions a plain `pip install tgic_jax` brings: its requirements without
    extras, and theirs, recursively (canonical names)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen, todo = set(), [name]
    while todo:
        dist = canonicalize_name(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requirements = md.requires(dist) or []
        except md.PackageNotFoundError:
            continue
        for line in requirements:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.mark.slow  # a subprocess that compiles the tiny codec (~1 min on 2 cores)
def test_compress_and_decompress_need_no_package_outside_the_declared_dependencies(tmp_path):
    # Measured: a plain install lacked flatbuffers, which jax.export needs to keep the
    # exported programs (the default cache); the test venv had it through TensorFlow.
    from helpers import TINY, synthetic_image, text_states, tiny_model
    from packaging.utils import canonicalize_name

    from tgic_jax import image_io
    from tgic_jax.checkpoints.inference import save_inference

    _, v = tiny_model(0)
    ckpt = tmp_path / "tiny"
    save_inference(ckpt, TINY, v["params"], tables=v["tables"])
    image_io.save_png(tmp_path / "a.png", synthetic_image(32, 32, 1))
    np.save(tmp_path / "t.npy", text_states())
    code = """
import importlib.metadata, json, sys
before = set(sys.modules)
from tgic_jax.cli import main as cli
d, ck = sys.argv[1:]
rc = [cli.main(["compress", f"{d}/a.png", "--text-embeddings", f"{d}/t.npy",
                "--checkpoint", ck, "-o", f"{d}/a.tgic"]),
      cli.main(["decompress", f"{d}/a.tgic", "--checkpoint", ck, "-o", f"{d}/a.tgic.png"])]
names = importlib.metadata.packages_distributions()
top = {m.split(".")[0] for m in set(sys.modules) - before if sys.modules.get(m) is not None}
print(json.dumps({"rc": rc, "used": {t: names[t] for t in sorted(top) if t in names}}))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), TGIC_JAX_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ckpt)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["rc"] == [0, 0], proc.stderr[-3000:]
    assert any((tmp_path / "cache").rglob("*.jaxexp"))  # the programs were kept
    # A namespace (`google`) is shared by several distributions: one of them must be declared.
    used = {top: {canonicalize_name(d) for d in dists} for top, dists in result["used"].items()}
    assert {"jax", "constriction"} <= set(used)  # the check sees real imports
    base = _base_dependencies()
    assert {top: dists for top, dists in used.items() if not dists & base} == {}
