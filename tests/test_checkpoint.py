"""Saves and restores: a failed background or final write stops the run in one line naming
its step; no checkpoint that restores is said in one line."""

import re
import signal
from pathlib import Path

import pytest
from helpers import (
    _damage,
    _env,
    _finished_steps,
    _restorable_steps,
    _run_train,
    _tiny_workdir_with_checkpoints,
)


class _FailingSaves:
    """A CheckpointManager whose asynchronous saves fail in the background once `failed`."""

    def __init__(self, directory):
        self.directory = directory
        self.in_progress = True
        self.failed = False

    def is_saving_in_progress(self):
        return self.in_progress

    def check_for_errors(self):
        if self.failed:
            raise OSError(28, "No space left on device")

    def wait_until_finished(self):
        self.in_progress = False

    def save(self, step, args=None, force=False):
        if self.failed:
            raise OSError(28, "No space left on device")
        return True


def test_a_background_save_that_fails_stops_training_at_the_step_it_ends(tmp_path):
    # Measured on a full disk: the step-20 save failed while training went on to 30, then
    # ~315 lines of tracebacks.
    from tgic_jax.train import checkpoint as ckpt_lib

    manager = _FailingSaves(tmp_path)
    watch = ckpt_lib.SaveWatch(manager)
    assert watch.save(20, state={})
    watch.check(21)  # still writing: no verdict yet, no wait
    manager.in_progress, manager.failed = False, True
    with pytest.raises(ckpt_lib.CheckpointError) as err:
        watch.check(22)
    assert str(err.value) == (
        "the checkpoint of step 20 failed to write (found at step 22): "
        "disk full: OSError: [Errno 28] No space left on device"
    )
    with pytest.raises(ckpt_lib.CheckpointError, match="saving the checkpoint of step 30 failed"):
        ckpt_lib.save_train_state(manager, 30, state={})


@pytest.mark.slow  # two tiny runs, the second compiling without the cache (~2 min)
def test_a_checkpoint_write_that_really_fails_stops_the_run_in_one_line_keeping_the_good_ones(
    tmp_path,
):
    # A file-size limit makes the kernel refuse the array file of a checkpoint (EFBIG), as a
    # full disk would (ENOSPC); measured before: ~900 lines of orbax and asyncio tracebacks
    # and the failure named after the next step's save.
    import resource

    workdir = tmp_path / "run"
    first = _run_train(workdir, "--config.total_steps=10")
    assert first.returncode == 0, first.stderr[-3000:]
    limit = 300_000  # above every file of the run but the checkpoints' array data (~2 MB)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(_env(), JAX_ENABLE_COMPILATION_CACHE="false")  # its entries are larger
    second = _run_train(workdir, "--config.total_steps=40", env=env, preexec_fn=limit_file_size)
    assert second.returncode == 1
    # Found at the first step after the write ends, or at the next save at the latest (it
    # waits for the write, as orbax would): how many steps that takes depends on the machine.
    found = re.fullmatch(
        r"train\.py: error: the checkpoint of step 20 failed to write \(found "
        r"at step (2\d|30)\)[^\n]*\n",
        second.stderr,
    )
    assert found, second.stderr[-3000:]
    logged = [int(s) for s in re.findall(r"\[train\] step (\d+)/40", second.stdout)]
    assert logged and max(logged) <= int(found[1])  # no step trained past it
    assert _restorable_steps(workdir) == [10]


def test_a_failed_save_found_by_the_next_save_is_named_after_its_own_step(tmp_path):
    # Measured with a file-size limit: orbax reports step 10's failed write when step 20
    # is saved, and the run said "saving the checkpoint of step 20 failed".
    from tgic_jax.train import checkpoint as ckpt_lib

    manager = _FailingSaves(tmp_path)
    watch = ckpt_lib.SaveWatch(manager)
    assert watch.save(10, state={})
    manager.failed = True  # still "in progress" at every check until the next save
    watch.check(15)
    with pytest.raises(ckpt_lib.CheckpointError) as err:
        watch.save(20, state={})
    assert str(err.value).startswith("the checkpoint of step 10 failed to write (found at step 20)")


def test_a_background_save_whose_step_never_appears_is_a_failure_too(tmp_path):
    from tgic_jax.train import checkpoint as ckpt_lib

    manager = _FailingSaves(tmp_path)
    manager.in_progress = False  # orbax logged the error in its thread, check_for_errors is quiet
    watch = ckpt_lib.SaveWatch(manager)
    watch.save(10, state={})
    (tmp_path / "10").mkdir()
    watch.check(11)  # on disk: fine
    watch.save(20, state={})
    with pytest.raises(ckpt_lib.CheckpointError, match="step 20 failed to write"):
        watch.check(21)


def test_with_no_checkpoint_that_restores_one_line_says_so_and_nothing_is_deleted(tmp_path):
    from tgic_jax.train import checkpoint as ckpt_lib

    workdir = tmp_path / "run"
    _tiny_workdir_with_checkpoints(workdir, [10])
    _damage(workdir / "checkpoints" / "10")
    with pytest.raises(ckpt_lib.CheckpointError) as err:
        ckpt_lib.restore_train_params(workdir)
    assert re.fullmatch(r"no checkpoint in .*/checkpoints restores \(step 10: .*\)", str(err.value))
    assert (workdir / "checkpoints" / "10").is_dir()


@pytest.mark.slow  # one tiny run (its compile is cached after the first test's)
def test_a_final_save_that_fails_ends_in_one_line_saying_why(tmp_path):
    # Measured on a full 55 MB tmpfs: 263 "ImportError: sys.meta_path is None" tracebacks,
    # then a segmentation fault (exit 139): the last save's error escaped the run's report.
    import resource

    limit = 6 << 20  # above the compilation cache's entries (< 3 MB), below the
    # checkpoint's array data files (9-14 MB): only the checkpoint's write fails (EFBIG)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    workdir = tmp_path / "run"
    overrides = ("--config.total_steps=2", "--config.ckpt.every_steps=1000")
    proc = _run_train(workdir, *overrides, preexec_fn=limit_file_size)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.fullmatch(
        r"train\.py: error: the checkpoint of step 2 failed to write \(found at "
        r"step 2\): a file would exceed the file-size limit \(ulimit -f\): "
        r"[^\n]*\n",
        proc.stderr,
    ), proc.stderr[-3000:]
    assert _finished_steps(workdir) == []


def test_a_failed_write_names_a_full_disk_or_the_file_size_limit_from_orbaxs_error():
    # Orbax and tensorstore raise ValueError with the OS error in the text (measured on a full
    # tmpfs and under `ulimit -f`); an OSError may also come wrapped as a cause.
    from tgic_jax.train import checkpoint as ckpt_lib

    manager = _FailingSaves(Path("."))
    cases = {
        "disk full": ValueError(
            'RESOURCE_EXHAUSTED: Error writing "opt_state/0" in OCDBT '
            "database [OS error: No space left on device]"
        ),
        "a file would exceed the file-size limit (ulimit -f)": ValueError(
            "OUT_OF_RANGE: Error writing local file: Failed to write 76896 bytes to file 5: "
            "File too large [os_error_code='27']"
        ),
    }
    for words, error in cases.items():
        wrapped = RuntimeError("Save failed")
        wrapped.__cause__ = error
        for err in (error, wrapped):
            manager.check_for_errors = lambda err=err: (_ for _ in ()).throw(err)
            watch = ckpt_lib.SaveWatch(manager)
            with pytest.raises(ckpt_lib.CheckpointError) as raised:
                watch.finish(12)
            assert str(raised.value).startswith(
                f"a checkpoint of an earlier step failed to write (found at step 12): {words}: "
            ), str(raised.value)
