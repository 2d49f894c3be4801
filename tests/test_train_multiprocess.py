"""Two processes on localhost (2 CPU devices each, gloo collectives) train in lockstep."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

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
    from tgic_jax import train_lib

    config = get_config("tiny")
    config.total_steps = 3
    config.log_every_steps = 1
    config.ckpt.every_steps = 3
    state = train_lib.train_and_evaluate(config, workdir)
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
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")  # fmt: skip
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
    try:
        for p in procs:
            p.wait(timeout=900)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [log.read_text() for log in logs]
    report = "\n".join(f"--- process {i} (exit {p.returncode}):\n{out[-3000:]}"
                       for i, (p, out) in enumerate(zip(procs, outs, strict=True)))  # fmt: skip
    assert all(p.returncode == 0 for p in procs), report
    for out in outs:
        last = [line for line in out.splitlines() if line.startswith("{")][-1]
        assert json.loads(last)["step"] == 3, report
    assert "[train] step 3" in outs[0]  # process 0 logs, with the global batch
    a, b = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "p1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 100
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Both processes wrote one checkpoint of step 3 together.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3"]
