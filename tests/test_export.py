"""A training workdir -> an inference checkpoint (`trainer.export_inference`, `tgic export`)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from helpers import _optim, _tiny_workdir_with_checkpoints

from tgic_jax.train import optim, train_state, trainer


def test_export_writes_an_inference_checkpoint_without_optimizer_state(tmp_path):
    from tgic_jax.checkpoints import inference
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.train import checkpoint as ckpt_lib

    config = ml_collections.ConfigDict(
        dict(
            model=dict(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=4),
            text=dict(encoder="random", max_length=8),
            optim=_optim(),
            input={},
            mesh={},
        )
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(config.to_json())
    model = TACO(ModelConfig.from_config(config.model))
    optimizer = optim.make_optimizer(config.optim)
    state = train_state.create_train_state(model, optimizer, seed=0).replace(step=jnp.int32(7))
    manager = ckpt_lib.train_checkpoint_manager(workdir, 1, 1, use_async=False)
    ckpt_lib.save_train_state(manager, 7, state, force=True)
    manager.close()
    path = trainer.export_inference(workdir, tmp_path / "export")
    _, variables, loaded = inference.load_inference(path)
    assert set(variables) == {"params", "tables", "integer_entropy"}
    assert loaded.extra.train_step == 7
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, variables["params"], jax.device_get(state.params)
    )


def test_export_refuses_non_finite_parameters_in_one_line(tmp_path, capsys):
    # Measured: exporting a NaN checkpoint failed with a TensorFlow traceback (non-finite pmf).
    from tgic_jax.cli import main as cli

    workdir = tmp_path / "run"
    _tiny_workdir_with_checkpoints(workdir, [10], nan_steps=[10])
    assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tgic export: error: step 10 has non-finite parameters") and (
        err.count("\n") == 1
    ), err
    assert not (tmp_path / "x").exists()


def test_export_over_its_own_earlier_export_needs_force(tmp_path, capsys):
    from tgic_jax.cli import main as cli

    workdir = tmp_path / "run"
    _tiny_workdir_with_checkpoints(workdir, [10])
    argv = ["export", "--workdir", str(workdir), "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 0
    first = (tmp_path / "x" / "config.json").read_text()
    assert cli.main(argv) == 2
    assert "use --force to replace it" in capsys.readouterr().err
    assert cli.main([*argv, "--force"]) == 0
    assert (tmp_path / "x" / "config.json").read_text() == first


def _snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every entry under `folder` (folders included)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def test_export_reads_a_live_workdir_without_touching_the_runs_save_in_progress(tmp_path):
    # Measured: `tgic export` beside a run removed the run's in-flight save (orbax cleans
    # "temporary directories" when a writable manager opens), and the run died with
    # "Save failed: 834/834 params are missing .zarray".
    from tgic_jax.cli import main as cli
    from tgic_jax.train import checkpoint as ckpt_lib

    workdir = tmp_path / "run"
    _tiny_workdir_with_checkpoints(workdir, [10])
    in_flight = workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1700000000"
    in_flight.mkdir()
    (in_flight / "_CHECKPOINT_METADATA").write_text("{}")
    before = _snapshot(workdir)
    _, step = ckpt_lib.restore_train_params(workdir)
    assert step == 10
    assert cli.main(["export", "--workdir", str(workdir), "--out", str(tmp_path / "x")]) == 0
    assert _snapshot(workdir) == before  # nothing cleaned, created, rotated or locked


def test_export_force_replaces_only_the_checkpoints_own_files_and_says_so(tmp_path, capsys):
    # Measured: `--force` deleted NOTES.md and my_results/r.csv put into the folder.
    from tgic_jax.checkpoints import inference
    from tgic_jax.cli import main as cli

    workdir = tmp_path / "run"
    _tiny_workdir_with_checkpoints(workdir, [10])
    out = tmp_path / "x"
    argv = ["export", "--workdir", str(workdir), "--out", str(out)]
    assert cli.main(argv) == 0
    (out / "NOTES.md").write_text("my notes")
    (out / "my_results").mkdir()
    (out / "my_results" / "r.csv").write_text("a,b\n1,2\n")
    (out / "state" / "stale").write_text("ours: replaced with the state")
    capsys.readouterr()
    assert cli.main([*argv, "--force"]) == 0
    said = capsys.readouterr().out
    assert (
        f"replacing the inference checkpoint in {out} (config.json, state/); keeping "
        "NOTES.md, my_results/" in said
    ), said
    assert (out / "NOTES.md").read_text() == "my notes"
    assert (out / "my_results" / "r.csv").read_text() == "a,b\n1,2\n"
    assert not (out / "state" / "stale").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "NOTES.md",
        "config.json",
        "my_results",
        "state",
    ]
    assert inference.load_inference(out)[2].extra.train_step == 10
