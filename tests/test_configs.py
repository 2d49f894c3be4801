"""The config boundary: configs/base.py declares every key once, the shipped configs override
it, and tgic_jax/config.py types each section and names the closest key of a misspelled one."""

import dataclasses
import json
import subprocess
import sys

import ml_collections
import pytest
from helpers import _train_cmd

from tgic_jax import config as config_lib
from tools import dump_configs

# Keys whose name or "nothing set" value changed when configs/base.py was introduced.
RENAMED = {"optim.train_images": "optim.epoch_pairs"}
NONE_WAS_MINUS_ONE = {"total_steps", "mesh.data"}


def test_every_shipped_config_variant_resolves_to_the_values_it_had_before(repo_root):
    before = json.loads((repo_root / "tests" / "fixtures" / "configs_before.json").read_text())
    now = dump_configs.dump()
    assert set(now) == set(before)
    for variant, keys in before.items():
        for key, value in keys.items():
            expected = None if key in NONE_WAS_MINUS_ONE and value == -1 else value
            assert now[variant][RENAMED.get(key, key)] == expected, (variant, key)


def test_base_declares_exactly_the_keys_the_typed_sections_know_with_the_same_defaults():
    base = dump_configs.flatten(dump_configs.load("base.py", None))
    assert sorted(base) == sorted(config_lib.known_keys())
    for name, section in config_lib.SECTIONS.items():
        for field in dataclasses.fields(section):
            value = base[f"{name}.{field.name}"]
            default = list(field.default) if isinstance(field.default, tuple) else field.default
            assert value == default, f"{name}.{field.name}"
    for key, default in config_lib.TOP_LEVEL.items():
        assert base[key] == default, key


def test_small_is_a_short_override_of_the_base(repo_root):
    source = (repo_root / "configs" / "small.py").read_text()
    assert "base.get_config()" in source and "ConfigDict(" not in source
    assert len(source.splitlines()) < 80  # was 112 lines re-declaring the whole tree


def test_a_misspelled_key_is_one_error_naming_the_closest_known_key():
    from configs.small import get_config

    config = get_config("tiny")
    config.optim.lerning_rate = 1.0
    with pytest.raises(config_lib.ConfigKeyError) as err:
        config_lib.RunConfig.from_config(config)
    assert "\n" not in str(err.value) and "'optim.learning_rate'" in str(err.value)
    with pytest.raises(config_lib.ConfigKeyError, match="'loss.k_p'"):
        config_lib.LossConfig.from_config({"k_q": 1.0})


def test_train_py_refuses_a_misspelled_override_in_one_line_naming_the_key(repo_root, tmp_path):
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        "configs/small.py:tiny",
        "--workdir",
        str(tmp_path / "run"),
        "--config.optim.lerning_rate=1",
    ]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "learning_rate" in lines[0] and "lerning_rate" in lines[0]
    assert not (tmp_path / "run").exists()


def test_sections_are_frozen_and_none_means_nothing_set():
    from configs.taco import get_config

    run = config_lib.RunConfig.from_config(get_config())
    assert run.total_steps is None and run.mesh.data is None and run.input.workers is None
    assert run.optim.decay_epochs == (45, 48)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.optim.learning_rate = 1.0


def test_an_older_runs_config_json_reads_with_todays_names():
    old = {"total_steps": -1, "mesh": {"data": -1}, "optim": {"train_images": 64, "epochs": 5}}
    new = config_lib.upgrade(old)
    assert new == {
        "total_steps": None,
        "mesh": {"data": None},
        "optim": {"epoch_pairs": 64, "epochs": 5},
    }
    assert config_lib.OptimConfig.from_config(old["optim"]).epoch_pairs == 64


def test_a_rerun_of_a_workdir_written_before_the_rename_resumes(tmp_path):
    from configs.small import get_config
    from tgic_jax.train import config_checks

    config = get_config("tiny")
    old = json.loads(config.to_json())
    old["optim"]["train_images"] = old["optim"].pop("epoch_pairs")
    old["total_steps"], old["mesh"]["data"] = -1, -1
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert config_checks.compare_with_workdir(config, tmp_path) == {}
    config.input.crop_size = 128  # a frozen key still refuses
    with pytest.raises(config_checks.ConfigError, match="input.crop_size"):
        config_checks.compare_with_workdir(config, tmp_path)


def test_a_config_dict_from_a_test_with_only_some_keys_gets_the_base_defaults():
    partial = ml_collections.ConfigDict(dict(optim=dict(learning_rate=1e-3, train_images=100)))
    run = config_lib.RunConfig.from_config(partial)
    assert run.optim.epoch_pairs == 100 and run.optim.decay_factor == 0.1
    assert run.input.prefetch_batches == 2


def test_config_json_records_every_key_and_reads_back_as_the_runs_typed_config(tmp_path):
    from configs.small import get_config
    from tgic_jax.train import config_checks

    config = get_config("tiny")
    run = config_lib.RunConfig.from_config(config)
    config_checks.record_config(run, tmp_path, {}, devices=2)
    text = (tmp_path / "config.json").read_text()
    recorded = json.loads(text)
    assert recorded["run"] == {"devices": 2}  # beside the config, not a key of it
    assert sorted(dump_configs.flatten(ml_collections.ConfigDict(recorded))) == sorted(
        config_lib.known_keys() + ["run.devices"]
    )
    assert config_lib.RunConfig.from_json(text) == run
    # The same run given as its ConfigDict or typed: one answer from every module.
    assert config_checks.compare_with_workdir(config, tmp_path, devices=2) == {}
    assert config_checks.compare_with_workdir(run, tmp_path, devices=2) == {}
    config.optim.learning_rate = 5e-3
    assert config_checks.compare_with_workdir(config, tmp_path) == {
        "optim.learning_rate": (run.optim.learning_rate, 5e-3)
    }


def test_train_modules_take_the_typed_config_and_read_it_as_the_config_dict_says():
    from configs.small import get_config
    from tgic_jax.train import config_checks, optim

    config = get_config("tiny")
    run = config_lib.RunConfig.from_config(config)
    assert config_lib.RunConfig.from_config(run) is run
    assert (
        optim.global_batch_size(run, 4)
        == optim.global_batch_size(config, 4)
        == 4 * int(config.input.batch_size_per_device)
    )
    assert optim.total_steps(run, 2) == optim.total_steps(config, 2)
    counted = optim.with_epoch_size(run, 30)  # a pair source's epoch: the data's count
    assert counted.optim.epoch_pairs == 30 and run.optim.epoch_pairs == config.optim.epoch_pairs
    assert optim.steps_per_epoch(counted.optim, 2) == 15
    config_checks.validate(run, global_batch=4)
    config.loss.k_p = -1.0
    with pytest.raises(config_checks.ConfigError, match=r"^loss.k_p=-1.0: must be >= 0$"):
        config_checks.validate(config, global_batch=4)
    config.loss.k_q = 1.0
    with pytest.raises(config_checks.ConfigError, match="did you mean 'loss.k_p'"):
        config_checks.validate(config, global_batch=4)


@pytest.mark.slow  # trains 2 steps, then exports and evaluates: ~1 min on an idle 2-core box
def test_eval_py_reads_the_runs_config_json_without_config(repo_root, tmp_path, kodak_dir):
    import os

    from PIL import Image

    evalset = tmp_path / "evalset"
    evalset.mkdir()
    Image.open(kodak_dir / "kodim23.png").crop((0, 0, 64, 64)).save(evalset / "k.png")
    (evalset / "captions.json").write_text(json.dumps({"k.png": "two parrots"}))
    env = dict(os.environ, PYTHONPATH=str(repo_root), JAX_PLATFORMS="cpu")
    workdir = tmp_path / "run"
    train = _train_cmd(
        workdir,
        "--config.total_steps=2",
        f"--config.eval.folder={evalset}",
        "--config.eval.every_epochs=0",
    )
    proc = subprocess.run(
        train, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluate = [sys.executable, "eval.py", "--workdir", str(workdir), "--nolpips"]
    proc = subprocess.run(
        evaluate, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The run's eval.folder (one 64x64 crop), not configs/small.py's default (Kodak).
    rows = json.loads((workdir / "eval" / "per_image.json").read_text())["rows"]
    assert {r["image"] for r in rows} == {"k.png"} and {r["width"] for r in rows} == {64}
