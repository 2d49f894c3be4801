"""A run's life (`train/lifecycle/`): Ctrl-C saves and stops, a second run on a workdir is
refused, a signal during start-up ends the run at once, a non-finite step is named."""

import contextlib
import os
import re
import signal
import subprocess
import time

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, _env, _finished_steps, _restorable_steps, _train_cmd


@pytest.mark.slow  # compiles the tiny train step (~1-2 min on 2 cores)
def test_ctrl_c_saves_the_current_step_and_a_second_run_on_the_workdir_is_refused(tmp_path):
    workdir = tmp_path / "run"
    overrides = ("--config.total_steps=1000", "--config.ckpt.every_steps=1000")
    with _train_py(workdir, *overrides, "--config.log_every_steps=1") as proc:
        out = []
        for line in proc.stdout:  # our lines only: a compile notice, then N/TOTAL and eta
            out.append(line)
            if line.startswith("[train] step 3/1000 "):
                break
        assert any(line.startswith("compiling the train step") for line in out), out
        assert re.match(r"\[train\] step 3/1000 eta \d:\d\d:\d\d ", out[-1]), out[-1]
        # A second run on the same workdir: refused in one line, before anything is written.
        second = subprocess.run(
            proc.args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 1
        assert second.stderr.startswith("train.py: error: ") and "in use by another" in (
            second.stderr
        ), second.stderr
        assert second.stderr.count("\n") == 1
        err, waited = _stop(proc, signal.SIGINT)
    assert proc.returncode == 130, err[-3000:]
    stopped = int(re.search(r"interrupted \(SIGINT\) at step (\d+): saved", err)[1])
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert _restorable_steps(workdir) == [stopped] and stopped >= 3
    assert waited < 30


@contextlib.contextmanager
def _train_py(workdir, *overrides):
    """train.py on the tiny config in a new process, its output piped; killed if left running."""
    proc = subprocess.Popen(
        _train_cmd(workdir, *overrides),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def _stop(proc, sig) -> tuple[str, float]:
    """Sends `sig` to a running train.py: (its stderr, the seconds it took to end)."""
    proc.send_signal(sig)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=120)
    return err, time.perf_counter() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_ends_the_run_at_once_in_one_line(tmp_path, sig):
    # Measured before: two hosts went on compiling for 150 s with nothing printed.
    workdir = tmp_path / "run"
    with _train_py(workdir, "--config.total_steps=50") as proc:
        for line in proc.stdout:
            if line.startswith("compiling the train step"):
                break
        err, waited = _stop(proc, sig)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert (
        err == f"{sig.name} during start-up: stopping before the first step (nothing "
        "trained to save)\n"
    )
    assert waited < 10 and _finished_steps(workdir) == []


@pytest.mark.parametrize("after_s", [0.3, 1.0])
def test_ctrl_c_at_any_moment_of_the_start_ends_the_run_at_once_in_one_line(tmp_path, after_s):
    # Measured: at 0.3 s (inside an import) the signal was lost and the run trained to the
    # end with exit 0; at 0.5-1.3 s a 40-line KeyboardInterrupt traceback.
    workdir = tmp_path / "run"
    with _train_py(workdir, "--config.total_steps=50") as proc:
        time.sleep(after_s)
        err, waited = _stop(proc, signal.SIGINT)
    assert proc.returncode == 130, err[-3000:]
    assert re.fullmatch(
        r"SIGINT(:| during start-up:) stopping[^\n]*nothing trained to save\)?\n", err
    ), err
    assert waited < 10 and not (workdir / "config.json").exists()


def test_the_first_non_finite_step_is_named_and_none_before_it_is_blamed():
    from tgic_jax.train.finite_watch import NonFiniteError, NonFiniteWatch

    watch = NonFiniteWatch()
    for step, loss in [(1, 2.0), (2, 1.5)]:
        watch.add(step, {"loss": jnp.float32(loss), "grad_norm": jnp.float32(1.0), "psnr": 1})
    watch.check()
    watch.add(3, {"loss": jnp.float32(1.0), "grad_norm": jnp.float32(np.inf)})
    watch.add(4, {"loss": jnp.float32(np.nan), "grad_norm": jnp.float32(np.nan)})
    with pytest.raises(NonFiniteError, match=r"^step 3: grad_norm=inf is not finite$"):
        watch.check()


def test_a_second_run_on_a_workdir_is_refused_while_the_first_holds_it(tmp_path):
    from tgic_jax.train.workdir_lock import WorkdirBusy, WorkdirLock

    first = WorkdirLock(tmp_path)
    first.acquire()
    with pytest.raises(WorkdirBusy, match=rf"in use by another training run \(pid {os.getpid()}"):
        WorkdirLock(tmp_path).acquire()
    first.release()
    again = WorkdirLock(tmp_path)  # released (as by the kernel when a run dies): free again
    again.acquire()
    again.release()
