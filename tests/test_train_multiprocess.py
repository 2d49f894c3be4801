"""Two processes on localhost (2 CPU devices each, gloo collectives): lockstep, preemption."""

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import REPO, _env

_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np

    port, pid, workdir, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=pid)
    assert jax.process_count() == 2 and jax.device_count() == 4
    from configs.small import get_config
    from tgic_jax.train import trainer

    config = get_config("tiny")
    config.total_steps = 3
    config.log_every_steps = 1
    config.ckpt.every_steps = 3
    state = trainer.train_and_evaluate(config, workdir)
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
    np.savez(out, **{jax.tree_util.keystr(k): v for k, v in flat})
    print(json.dumps({"step": int(state.step)}))
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_three_steps_to_identical_parameters(tmp_path, kodak_dir):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = _env(devices=2)
    port = _free_port()
    workdir = tmp_path / "run"  # shared, as on a cluster file system
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        args = [
            sys.executable,
            str(script),
            str(port),
            str(i),
            str(workdir),
            str(tmp_path / f"p{i}.npz"),
        ]
        with log.open("w") as f:  # a file, not a pipe: nobody has to drain it
            procs.append(
                subprocess.Popen(args, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
            )
    outs, results, report = _finish_pair(procs, logs, timeout=900)
    assert [r["step"] for r in results] == [3, 3], report
    assert "[train] step 3" in outs[0]  # process 0 logs, with the global batch
    a, b = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "p1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 100
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Both processes wrote one checkpoint of step 3 together.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3"]


# ----------------------------------------------------------------------------- preemption
_PREEMPTED_CHILD = textwrap.dedent(
    """
    import json, pathlib, sys, time
    port, pid, workdir, total, released, budget_minutes = sys.argv[1:7]
    from tgic_jax.train import distributed
    assert distributed.maybe_initialize_distributed(f"localhost:{port}", 2, int(pid))
    import jax, numpy as np
    from configs.small import get_config
    from tgic_jax.train import trainer

    config = get_config("tiny")
    config.total_steps = int(total)
    config.log_every_steps = 1
    config.ckpt.every_steps = 10_000  # the only checkpoints: preemption's, the budget's
    config.train_time_limit_minutes = float(budget_minutes)
    state = trainer.train_and_evaluate(config, workdir)
    leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
    print(json.dumps({"step": int(state.step),
                      "checksum": float(sum(np.abs(x).sum() for x in leaves))}), flush=True)
    # Stay alive until the test has sent every signal: on a pod the scheduler's SIGTERM
    # reaches each host whatever it is doing, and JAX's handler takes it.
    deadline = time.time() + 120
    while not pathlib.Path(released).exists() and time.time() < deadline:
        time.sleep(0.1)
    """
)


def _start_pair(script, workdir, total, released, cwd, env, logs, budgets=(0, 0)):
    port = _free_port()
    procs = []
    for i, log in enumerate(logs):
        args = [
            sys.executable,
            str(script),
            str(port),
            str(i),
            workdir,
            str(total),
            str(released),
            str(budgets[i]),
        ]
        with log.open("w") as f:
            procs.append(
                subprocess.Popen(args, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
            )
    return procs


def _finish_pair(procs, logs, timeout):
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [log.read_text() for log in logs]
    report = "\n".join(
        f"--- process {i} (exit {p.returncode}):\n{out[-3000:]}"
        for i, (p, out) in enumerate(zip(procs, outs, strict=True))
    )
    assert all(p.returncode == 0 for p in procs), report
    results = [[ln for ln in out.splitlines() if ln.startswith("{")] for out in outs]
    assert all(results), report
    results = [json.loads(lines[-1]) for lines in results]
    return outs, results, report


@pytest.mark.slow
def test_sigterm_seconds_apart_stops_both_hosts_at_one_step_and_so_does_one_hosts_budget(
    tmp_path, kodak_dir
):
    script = tmp_path / "child.py"
    script.write_text(_PREEMPTED_CHILD)
    env = _env(devices=2)
    run = tmp_path / "run"
    workdir = f"file://{run}"  # a URL: must stay the shared folder, not <cwd>/file:/...
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    released = tmp_path / "released"
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = _start_pair(script, workdir, 100_000, released, cwd, env, logs)
    try:
        deadline = time.time() + 600  # two tiny train-step compiles on 2 cores
        while "[train] step 3/" not in logs[0].read_text():
            assert time.time() < deadline and all(p.poll() is None for p in procs), "no step 3"
            time.sleep(0.2)
        procs[0].send_signal(signal.SIGTERM)
        time.sleep(2.0)
        procs[1].send_signal(signal.SIGTERM)
        time.sleep(0.5)
        released.touch()
    finally:
        released.touch()
        outs, results, report = _finish_pair(procs, logs, timeout=120)
    step = results[0]["step"]
    assert results[1]["step"] == step and 3 <= step < 100_000, report
    assert f"preemption: stopping at step {step}" in outs[0], report
    assert results[0]["checksum"] == results[1]["checksum"]
    # One complete checkpoint, of that step, in the URL's folder; nothing under the cwd.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [str(step)], report
    assert (run / "config.json").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(cwd.iterdir())

    # Again: both resume from it and go on, until process 1 alone is over its time budget
    # (spent at once); the budget is agreed every 10 steps, so both stop at the next
    # multiple of 10 and save it.
    procs = _start_pair(script, workdir, step + 20, released, cwd, env, logs, (1e6, 1e-6))
    outs, results, report = _finish_pair(procs, logs, timeout=600)
    assert f"resumed from step {step}" in outs[0], report
    stop = -(-step // 10) * 10
    assert [r["step"] for r in results] == [stop, stop], report
    assert f"train_time_limit_minutes: stopping at step {stop}" in outs[0], report
    saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir())
    assert saved == sorted({step, stop}), report


_BEST_CHILD = textwrap.dedent(
    """
    import json, sys
    port, pid, workdir = sys.argv[1:4]
    from tgic_jax.train import distributed
    assert distributed.maybe_initialize_distributed(f"localhost:{port}", 2, int(pid))
    import jax
    from configs.small import get_config
    from tgic_jax.model.taco import TACO, ModelConfig, init_variables
    from tgic_jax.train import selection

    best = []
    if jax.process_index() == 0:  # as in the loop: process 0 evaluates, the other waits
        config = get_config("tiny")
        model = TACO(ModelConfig.from_config(config.model))
        params = init_variables(model, jax.random.key(0))["params"]
        best = selection.record_evaluation(workdir, config, 2, 1, {"psnr_real": 20.0}, params)
    distributed.sync_hosts("test/best_kept", timeout_s=120)
    print(json.dumps({"best": best}), flush=True)
    """
)


@pytest.mark.slow
def test_process_0_keeps_a_best_checkpoint_while_the_other_host_waits_at_a_barrier(tmp_path):
    # orbax's default save meets every host at a device collective: process 0 alone would
    # wait there forever while process 1 waits at the coordination barrier.
    from tgic_jax.checkpoints import inference
    from tgic_jax.train import selection

    script = tmp_path / "child.py"
    script.write_text(_BEST_CHILD)
    env = _env(devices=2)
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    (tmp_path / "run").mkdir()  # as the loop leaves it
    procs = _start_pair(script, str(tmp_path / "run"), 0, tmp_path / "unused", REPO, env, logs)
    _, results, _ = _finish_pair(procs, logs, timeout=300)
    assert results == [{"best": ["best_psnr"]}, {"best": []}]
    _, _, loaded = inference.load_inference(tmp_path / "run" / selection.BEST_DIR / "best_psnr")
    assert loaded.extra.train_step == 2
