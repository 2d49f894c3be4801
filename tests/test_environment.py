"""`tgic env`: devices, processes, the mesh a config builds, TensorFlow kept off GPUs."""

import json
import subprocess
import sys

import jax
import pytest
from helpers import REPO, _env

from tgic_jax.cli import environment


def test_describe_reports_this_hosts_devices_and_the_mesh_a_config_builds():
    config = environment.load_config(str(REPO / "configs" / "taco.py") + ":lmbda=0.0016")
    info = environment.describe(config)
    n = jax.device_count()
    assert info["jax"]["platform"] == "cpu" and info["jax"]["device_count"] == n
    assert (info["jax"]["process_index"], info["jax"]["process_count"]) == (0, 1)
    assert info["jax"]["peak_tflops_per_device"] is None  # a CPU: no MFU
    assert info["mesh"]["axes"] == {"data": n}
    assert info["mesh"]["global_batch"] == 8 * n == info["mesh"]["batch_per_process"]
    assert info["tensorflow"]["usable_gpus"] == 0
    assert info["packages"]["jax"] == jax.__version__
    assert info["packages"]["jax-cuda12-plugin"] is None  # the CPU install
    json.dumps(info)  # --json must be able to print it


def test_report_says_ok_without_gpus_for_tensorflow_and_flags_a_problem_otherwise():
    info = environment.describe()
    text = environment.format_report(info)
    assert "process:           0 of 1" in text and "may use 0 (OK)" in text
    info["tensorflow"]["usable_gpus"] = 1
    assert "PROBLEM: TensorFlow would take GPU memory" in environment.format_report(info)


def test_load_config_of_a_missing_file_fails_with_its_name():
    with pytest.raises(FileNotFoundError, match="nope.py"):
        environment.load_config("configs/nope.py:tiny")


def test_tgic_env_command_shows_the_mesh_over_four_host_devices():
    env = _env(devices=4)
    cmd = [
        sys.executable,
        "-m",
        "tgic_jax.cli",
        "env",
        "--json",
        "--config",
        str(REPO / "configs" / "small.py") + ":tiny",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["jax"]["local_device_count"] == 4
    assert info["mesh"] == {
        "axes": {"data": 4},
        "batch_per_device": 2,
        "global_batch": 8,
        "batch_per_process": 8,
        "processes": 1,
    }
    assert info["tensorflow"]["usable_gpus"] == 0


def test_report_says_tensorflow_is_not_installed_where_it_is_absent(monkeypatch):
    real = environment.importlib.util.find_spec
    fake = lambda name, *a: None if name == "tensorflow" else real(name, *a)
    monkeypatch.setattr(environment.importlib.util, "find_spec", fake)
    info = environment.describe()
    assert info["tensorflow"] == {
        "version": None,
        "built_with_cuda": False,
        "physical_gpus": 0,
        "usable_gpus": 0,
    }
    assert "TensorFlow:        not installed" in environment.format_report(info)
