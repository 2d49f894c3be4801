"""The prepared GPU check: its carried wheels and its --cpu dry run (what CI runs)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as z:
        record = "".join(f"{name},sha256=x,1\n" for name in files)
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(path.name.split("-")[0] + ".dist-info/RECORD", record)
    return path


def test_only_wheels_whose_module_is_missing_are_unpacked(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(
        wheels / "ml_collections-1.1.0-py3-none-any.whl", {"ml_collections/__init__.py": b"X = 1\n"}
    )
    _wheel(wheels / "constriction-0.5.0-cp312-cp312-linux.whl", {"constriction/__init__.py": b""})
    real = gpu_check.importlib.util.find_spec
    missing = lambda name: None if name == "ml_collections" else real("json")
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", missing)
    gpu_check.install_wheels(wheels, tmp_path / "site")
    assert (tmp_path / "site" / "ml_collections" / "__init__.py").read_text() == "X = 1\n"
    assert not (tmp_path / "site" / "constriction").exists()  # "already installed"


@pytest.mark.slow
def test_cpu_dry_run_runs_every_section_of_the_gpu_check():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    for line in (
        "-- (a) tgic env: ok",
        "train step float32 batch 1:",
        "train step bfloat16 batch 1:",
        "skipped: no checkout of the authors' code",
        "encode: ",
        "decode: ",
        "input alone, jpeg",
        "cross-device: y_hat identical",
    ):
        assert line in out, line
