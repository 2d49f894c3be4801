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
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(port),
                str(i),
                str(workdir),
                str(tmp_path / f"p{i}.npz"),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=540))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outs, strict=True):
        assert p.returncode == 0, stderr[-4000:]
        assert json.loads(stdout.strip().splitlines()[-1])["step"] == 3
    assert "[train] step 3" in outs[0][0]  # process 0 logs, with the global batch
    a, b = np.load(tmp_path / "p0.npz"), np.load(tmp_path / "p1.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 100
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Both processes wrote one checkpoint of step 3 together.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3"]
