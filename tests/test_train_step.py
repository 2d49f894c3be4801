"""The jitted update: one step with every loss term on 1 and 8 devices and by hand."""

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO, _env

_EVERY_TERM = textwrap.dedent(
    """
    import functools, json, sys
    import jax, jax.numpy as jnp, numpy as np
    from configs.small import get_config
    from tgic_jax.train import losses
    from tgic_jax.train import optim, sharding, train_state, train_step
    from tgic_jax.model.taco import TACO, ModelConfig
    from tgic_jax.model.text_encoders import RandomTextEncoder

    assert jax.device_count() == 8
    config = get_config("tiny")
    config.loss.update(lmbda=0.0004, k_p=3.5, k_j=0.0025, lpips_input_range="zero_one",
                       joint_group_size=4, clip_path=sys.argv[1])
    rng = np.random.default_rng(0)
    # The tiny CLIP reads 16 positions of a 100-token vocabulary (99: end of text).
    ids = rng.integers(1, 99, (8, 16)).astype(np.int32)
    ids[:, -1] = 99
    host_batch = {"image": rng.random((8, 64, 64, 3), np.float32), "input_ids": ids,
                  "attention_mask": np.ones((8, 16), np.int32)}
    model = TACO(ModelConfig.from_config(config.model))
    tower = RandomTextEncoder(config.model.text_dim, 16)
    clip_model = losses.build_clip(config.loss.clip_path)
    clip_text_fn = functools.partial(losses.clip_text_embeddings, clip_model)
    loss_fn, frozen = losses.build_loss(config.loss, clip_model=clip_model)
    frozen = {**frozen, "text": tower.params}
    # Two groups by hand: the whole-batch loss (one group) on each half, averaged.
    config.loss.joint_group_size = 0
    one_group, _ = losses.build_loss(config.loss, clip_model=clip_model)

    def by_hand(frozen, outputs, x, t):
        parts = [one_group(frozen, jax.tree_util.tree_map(lambda v: v[s], outputs), x[s], t[s])
                 for s in (slice(0, 4), slice(4, 8))]
        return jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *parts)

    optimizer = optim.make_optimizer(config.optim)
    initial, results = None, {}
    for name, n, fn in (("1", 1, loss_fn), ("8", 8, loss_fn), ("hand", 1, by_hand)):
        step = train_step.make_train_step(model, fn, optimizer, tower.apply, clip_text_fn)
        mesh = sharding.make_mesh({"data": n})
        state, shardings, _ = train_state.init_sharded_state(model, optimizer, 0, mesh)
        if initial is None:
            initial = jax.device_get(state)
        state = jax.device_put(initial, shardings)  # identical starting point
        jitted = train_step.jit_train_step(step, mesh, shardings)
        state, metrics = jitted(state, sharding.put_replicated(frozen, mesh),
                                sharding.make_global_batch(mesh, host_batch), np.float32(1e-3))
        assert len(jax.tree_util.tree_leaves(state.params)[0].sharding.device_set) == n
        results[name] = jax.device_get((state.params, metrics))
    tree = lambda f, *ps: jax.tree_util.tree_leaves(jax.tree_util.tree_map(f, *ps))
    sq = lambda v: float(np.sum(np.square(v, dtype=np.float64)))
    def rel(a, b):
        return (sum(tree(lambda u, v: sq(u - v), a, b)) / sum(tree(sq, a))) ** 0.5
    p1, m1 = results["1"]
    p8 = results["8"][0]
    # Elements whose gradient is far above Adam's eps take a full step of lr (1e-3).
    full = lambda a, b, a0: float(np.where(np.abs(a - a0) > 0.99e-3, np.abs(a - b), 0).max())
    print(json.dumps({"loss": {k: float(v[1]["loss"]) for k, v in results.items()},
                      "terms": {k: float(m1[k]) for k in ("lpips", "joint", "distortion")},
                      "rel_8": rel(p1, p8), "rel_hand": rel(p1, results["hand"][0]),
                      "max_abs_8": max(tree(lambda a, b: float(np.abs(a - b).max()), p1, p8)),
                      "max_abs_full_steps_8": max(tree(full, p1, p8, initial.params)),
                      "moved": max(tree(lambda a, b: float(np.abs(a - b).max()), p1,
                                        initial.params))}))
    """
)


# Three compiles of the tiny train step with every loss term (the repository's tiny CLIP)
# in one subprocess of 8 CPU devices.
@pytest.mark.slow
def test_one_step_with_every_loss_term_is_the_same_on_1_and_8_devices_and_by_hand(tmp_path):
    script = tmp_path / "every_term.py"
    script.write_text(_EVERY_TERM)
    clip = REPO / "tests" / "fixtures" / "towers" / "tiny_clip"
    proc = subprocess.run(
        [sys.executable, str(script), str(clip)],
        cwd=REPO,
        env=_env(devices=8),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(v > 0 for v in out["terms"].values()), out  # every term is on
    losses_ = out["loss"]
    assert abs(losses_["8"] - losses_["1"]) <= 1e-5 * abs(losses_["1"]), out
    assert abs(losses_["hand"] - losses_["1"]) <= 1e-5 * abs(losses_["1"]), out
    assert out["moved"] > 1e-4, out  # the step really updated the parameters
    # All parameters as one vector agree to 1e-5, and so does every element that took a
    # full Adam step (> 0.99 lr: |g| > 99 eps). An element's step is lr * g / (|g| + eps):
    # where |g| is ~eps, the summation order of the two meshes moves g by its own size and the
    # step by a fraction of lr. Measured (jax 0.12, XLA CPU, tiny config without LPIPS and
    # CLIP): a g_a kernel element with |g| ~1.4e-9 stepped -1.25e-4 on one device and
    # -2.22e-4 on eight.
    assert out["rel_8"] < 1e-5 and out["rel_hand"] < 1e-5, out
    assert out["max_abs_full_steps_8"] < 1e-6, out
    assert out["max_abs_8"] < 0.25e-3, out  # a quarter of lr: near-eps gradients only
