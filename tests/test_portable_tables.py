"""Files decode on another CPU: tables and fingerprint do not depend on XLA's instruction set.

The decoding process runs with `XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`, as a CPU without AVX
would run XLA's code. When the z tables came out of XLA's float32 arithmetic, a model built
in each process (no stored tables) got another fingerprint there and refused every file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from helpers import synthetic_image

from tgic_jax.coding import codec
from tgic_jax.coding import tables as coding_tables
from tgic_jax.model.taco import TACO, ModelConfig, init_variables

REPO = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from flax.traverse_util import unflatten_dict
    from tgic_jax.coding import codec
    from tgic_jax.coding import tables as coding_tables
    from tgic_jax.model import entropy_models as em
    from tgic_jax.model.taco import TACO, ModelConfig

    with np.load(sys.argv[1]) as f:  # params only, as a converted checkpoint holds them
        params = unflatten_dict({tuple(k.split("/")): f[k] for k in f.files})
    tables = coding_tables.build_tables(params)
    fp = coding_tables.fingerprint(ModelConfig().to_dict(), tables)
    eb = params["entropy_bottleneck"]
    samples = np.linspace(-20, 20, 4001, dtype=np.float32)[None, None, :]
    samples = samples.repeat(len(eb["quantiles"]), 0)
    xla_likelihood = np.asarray(em.bottleneck_likelihood_cl(eb, samples))
    with open(sys.argv[2], "rb") as f:
        x, _ = codec.Coder(TACO(), {"params": params}).decode(f.read())
    np.savez(sys.argv[3], x=x, fingerprint=np.frombuffer(fp, np.uint8),
             xla_likelihood=xla_likelihood, **{"t_" + k: tables[k] for k in tables})
    """
)


@pytest.fixture(scope="module")
def paper():
    """A paper-size model with weights from its own init (no stored tables)."""
    model = TACO()
    # Eagerly: 70 s on a busy 2-core machine, where jitting the paper-size init takes longer.
    params = init_variables(model, jax.random.PRNGKey(3))["params"]
    return model, jax.tree.map(np.asarray, params)


@pytest.mark.slow
def test_a_file_of_a_model_built_in_process_decodes_under_another_instruction_set(tmp_path, paper):
    from tgic_jax.model import entropy_models as em

    model, params = paper  # tables are built on the fly, in each process
    np.savez(tmp_path / "params.npz", **{"/".join(k): v for k, v in flatten_dict(params).items()})
    image = synthetic_image(64, 64, 4)
    text = np.random.default_rng(5).normal(size=(9, model.config.text_dim)).astype(np.float32)
    coder = codec.Coder(model, {"params": params})
    r = coder.encode([image], [text], with_reconstruction=True)[0]
    (tmp_path / "im.tgic").write_bytes(r.data)
    tables = coding_tables.build_tables(params)
    fp = coding_tables.fingerprint(ModelConfig().to_dict(), tables)

    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_cpu_max_isa=SSE4_2",
        PYTHONPATH=str(REPO),
    )
    out = tmp_path / "child.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tmp_path / "params.npz"),
            str(tmp_path / "im.tgic"),
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as child:
        for k, v in tables.items():
            np.testing.assert_array_equal(child["t_" + k], v, err_msg=k)
        assert child["fingerprint"].tobytes() == fp
        x = child["x"]
        # What the tables no longer depend on: XLA's float32 likelihoods under SSE4.2.
        eb = params["entropy_bottleneck"]
        samples = np.linspace(-20, 20, 4001, dtype=np.float32)[None, None, :]
        ours = np.asarray(em.bottleneck_likelihood_cl(eb, samples.repeat(model.config.N, 0)))
        differ = int(np.sum(ours != child["xla_likelihood"]))
        print(f"XLA float32 likelihoods that differ under SSE4.2: {differ} of {ours.size}")
    assert x.shape == (64, 64, 3)
    # The networks' own float32 round-off differs between instruction sets, so the decoder's
    # image may differ from the encoder's in the last bits (not in its symbols).
    mse = float(np.mean((np.clip(x, 0, 1) - np.clip(r.x_hat, 0, 1)) ** 2))
    assert mse < 1e-6, mse


@pytest.mark.slow
def test_the_paper_size_model_refuses_a_100_byte_file_claiming_6000_x_6000_at_once(paper):
    import time

    from tgic_jax.coding import container

    model, params = paper
    variables = {"params": params}
    coder = codec.Coder(model, variables)  # outside the clock: it times the refusal alone
    fp = coder.fingerprint
    c = container.Container(6000, 6000, 94, 94, fp, (bytes(40), bytes(40)))
    data = container.pack(c)
    assert len(data) <= 105
    t0 = time.perf_counter()
    # y alone needs >= 248 bytes here: 45 M symbols at >= 4.4e-5 bits each.
    with pytest.raises(codec.BitstreamError, match="too few for the 6000 x 6000 image"):
        coder.decode(data, max_pixels=6000 * 6000)
    assert time.perf_counter() - t0 < 1.0
