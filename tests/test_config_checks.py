"""Config checks: bad values and a rerun's incompatible config are one-line errors, early."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs import small
from tgic_jax.train import config_checks, trainer
from tgic_jax.train.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _train_py(*args):
    """train.py in a fresh process on the CPU, its output captured."""
    env = {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _tiny(**overrides):
    config = small.get_config("tiny")
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    return config


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("loss.lmbda", 0.0, "loss.lmbda=0.0: must be > 0"),
        ("loss.lmbda", -1.0, "loss.lmbda=-1.0: must be > 0"),
        ("loss.k_p", -0.5, "loss.k_p=-0.5: must be >= 0"),
        ("loss.k_j", float("nan"), "loss.k_j=nan: must be >= 0"),
        (
            "input.crop_size",
            100,
            "input.crop_size=100: must be a multiple of the model's stride 64",
        ),
        ("input.batch_size_per_device", 0, "input.batch_size_per_device=0: must be >= 1"),
    ],
)
def test_values_that_would_train_wrong_are_refused_in_one_line(key, value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as err:
        config_checks.validate(_tiny(**{key: value}), global_batch=2)
    assert "\n" not in str(err.value)


def test_a_batch_the_joint_groups_do_not_tile_is_refused():
    config = _tiny(**{"loss.k_j": 1.0, "loss.joint_group_size": 8})
    config.text.encoder = "clip"
    with pytest.raises(ConfigError, match="global batch 12 is not a multiple of"):
        config_checks.validate(config, global_batch=12)
    config_checks.validate(config, global_batch=16)


def test_an_unknown_config_argument_is_an_error_not_the_full_config():
    with pytest.raises(ValueError, match="unknown argument 'tny'"):
        small.get_config("tny")


def test_a_rerun_may_change_how_it_trains_but_not_what_its_checkpoints_hold(tmp_path):
    from tgic_jax.checkpoints.inference import as_path

    workdir = as_path(tmp_path)
    config_checks.record_config(_tiny(), workdir, {})
    original = (tmp_path / "config.json").read_text()
    for key, value in [
        ("model.N", 32),
        ("seed", 1),
        ("input.batch_size_per_device", 4),
        ("text.encoder", "minilm"),
    ]:
        with pytest.raises(ConfigError, match=f"{key} .* would not fit its checkpoints") as err:
            config_checks.compare_with_workdir(_tiny(**{key: value}), workdir)
        assert "\n" not in str(err.value)
    changes = config_checks.compare_with_workdir(_tiny(**{"optim.learning_rate": 1e-4}), workdir)
    assert changes == {"optim.learning_rate": (1e-3, 1e-4)}
    assert (tmp_path / "config.json").read_text() == original  # compare writes nothing
    config_checks.record_config(_tiny(**{"optim.learning_rate": 1e-4}), workdir, changes)
    history = [json.loads(line) for line in (tmp_path / "config_history.jsonl").open()]
    assert history == [{"changes": {"optim.learning_rate": [1e-3, 1e-4]}}]
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["learning_rate"] == 1e-4


def test_a_rerun_on_another_device_count_is_refused_naming_both_counts(tmp_path):
    from tgic_jax.checkpoints.inference import as_path

    workdir = as_path(tmp_path)
    config_checks.record_config(_tiny(), workdir, {}, devices=8)
    assert json.loads((tmp_path / "config.json").read_text())["run"] == {"devices": 8}
    assert config_checks.compare_with_workdir(_tiny(), workdir, devices=8) == {}
    with pytest.raises(ConfigError) as err:
        config_checks.compare_with_workdir(_tiny(), workdir, devices=4)
    assert str(err.value) == (
        f"{workdir} was trained on 8 devices (global batch 16); this run has 4 (global batch "
        "8), which would change the data order and the steps per epoch (resume it on 8 "
        "devices, or use a new --workdir)"
    )
    # A workdir of an earlier version has no record: nothing to compare.
    config_checks.record_config(_tiny(), workdir, {})
    assert config_checks.compare_with_workdir(_tiny(), workdir, devices=4) == {}


def test_train_refuses_a_rerun_on_another_device_count_before_writing_anything(tmp_path):
    config_checks.record_config(_tiny(), tmp_path, {}, devices=jax.device_count() + 1)
    original = (tmp_path / "config.json").read_text()
    with pytest.raises(ConfigError, match=f"this run has {jax.device_count()} "):
        trainer.train_and_evaluate(_tiny(), tmp_path)
    assert (tmp_path / "config.json").read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == ["config.json"]


def test_train_refuses_an_incompatible_rerun_before_writing_anything(tmp_path):
    # Measured: N=32 on an N=16 run overwrote config.json, then 13 orbax tracebacks.
    config_checks.record_config(_tiny(), tmp_path, {})
    before = sorted(p.name for p in tmp_path.iterdir())
    original = (tmp_path / "config.json").read_text()
    with pytest.raises(ConfigError, match="model.N 16 -> 32"):
        trainer.train_and_evaluate(_tiny(**{"model.N": 32}), tmp_path)
    assert (tmp_path / "config.json").read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == before


def test_train_py_config_errors_are_one_line_with_a_nonzero_status(tmp_path):
    cases = [
        (["--config", f"{REPO}/configs/small.py:tny"], "unknown argument 'tny'"),
        (
            ["--config", f"{REPO}/configs/small.py:tiny", "--config.loss.lmbda=-1"],
            "loss.lmbda=-1.0: must be > 0",
        ),
    ]
    for args, message in cases:
        proc = _train_py(*args, "--workdir", str(tmp_path / "run"))
        assert proc.returncode != 0
        assert proc.stderr.startswith("train.py: error: ") and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_start_that_fails_its_checks_is_one_line_and_writes_nothing(tmp_path):
    # Measured: each of these gave a 16-53 line traceback, and /typo, mesh.data=0 and
    # model.N=99999999 left config.json and .lock, which refused the corrected rerun.
    tiny = f"{REPO}/configs/small.py:tiny"
    cases = [
        (["--config", f"{REPO}/configs/smal.py"], "--config: [Errno 2] No such file"),
        (["--config", tiny, "--config.mesh.data=4"], "mesh.data=4 but only 1 devices"),
        (["--config", tiny, "--config.mesh.data=0"], "mesh.data=0: must be a number of devices"),
        (
            ["--config", tiny, f"--config.input.folder={tmp_path / 'typo'}"],
            f"input: image folder {tmp_path / 'typo'} does not exist",
        ),
        (
            ["--config", tiny, "--config.model.N=99999992"],
            "model.N=99999992, model.M=24: the train state needs",
        ),
    ]
    for args, message in cases:
        proc = _train_py(*args, "--workdir", str(tmp_path / "run"))
        assert proc.returncode in (1, 2), (args, proc.stderr[-2000:])
        assert proc.stderr.startswith("train.py: error: ") and message in proc.stderr, (
            args,
            proc.stderr[-2000:],
        )
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert not (tmp_path / "run").exists(), args  # nothing written: a rerun is not refused
