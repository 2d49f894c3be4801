"""The package as a whole: its layers import only downwards; `python -m tgic_jax.cli` runs."""

import subprocess
import sys
from pathlib import Path

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
