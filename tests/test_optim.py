"""The optimizer partition (main / aux), the learning-rate schedule, the time budget's plan."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from helpers import _optim

from tgic_jax.train import optim, train_step


def _fake_params():
    return {
        "entropy_bottleneck": {"quantiles": jnp.ones((2, 1, 3)), "matrices_0": jnp.ones((2, 3, 1))},
        "g_a": {"kernel": jnp.ones((4,))},
    }


def test_main_gradients_never_move_quantiles_and_aux_gradients_move_only_quantiles():
    params = _fake_params()
    opt = optim.make_optimizer(_optim())
    state = opt.init(params)
    ones = jax.tree_util.tree_map(jnp.ones_like, params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    # Main-loss gradients everywhere (quantiles included), aux gradient zero.
    grads = train_step._with_quantile_grads(ones, zeros)
    updates, _ = opt.update(grads, state, params)
    assert float(jnp.abs(updates["entropy_bottleneck"]["quantiles"]).max()) == 0.0
    assert float(jnp.abs(updates["g_a"]["kernel"]).min()) > 0.0
    # Aux gradient only: only the quantiles move, at the aux learning rate (Adam step 1).
    grads = train_step._with_quantile_grads(zeros, ones)
    updates, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(updates["entropy_bottleneck"]["quantiles"], -1e-3, rtol=1e-4)
    assert float(jnp.abs(updates["g_a"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(updates["entropy_bottleneck"]["matrices_0"]).max()) == 0.0


def test_main_gradients_are_clipped_to_global_norm_one_before_adam():
    params = {"entropy_bottleneck": {"quantiles": jnp.zeros((1, 1, 3))}, "w": jnp.zeros((2,))}
    opt = optim.make_optimizer(_optim())
    state = opt.init(params)

    def step(state, scale):  # the same direction, at norm 500 * scale
        grads = {
            "entropy_bottleneck": {"quantiles": jnp.full((1, 1, 3), 100.0 * scale)},
            "w": jnp.array([300.0, 400.0]) * scale,
        }
        return opt.update(grads, state, params)

    first, state = step(state, 1.0)
    second, _ = step(state, 1 / 500)
    # Clipped to norm 1, both main gradients are [0.6, 0.8]: Adam sees a constant gradient
    # and repeats its update. The aux gradients are not clipped: 100 then 0.2 differ.
    np.testing.assert_allclose(second["w"], first["w"], rtol=1e-4)  # unclipped: 33 % apart
    q1, q2 = first["entropy_bottleneck"]["quantiles"], second["entropy_bottleneck"]["quantiles"]
    assert float(jnp.abs(q2 - q1).max()) > 1e-4


def test_learning_rate_drops_tenfold_at_epochs_45_and_48():
    schedule = optim.learning_rate_schedule(_optim(), global_batch=10)  # 10 steps/epoch
    lrs = [float(schedule(s)) for s in (0, 449, 450, 479, 480, 499)]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6], rtol=1e-6)
    config = ml_collections.ConfigDict(dict(total_steps=-1, optim=_optim()))
    assert optim.total_steps(config, 10) == 500


def test_a_budget_shortened_run_puts_its_decays_at_the_same_fractions():
    # 500 planned steps (decays at 450, 480); fitted to 100 steps they fall at 90 and 96.
    assert optim.decay_steps(_optim(), 10) == [450, 480]
    assert optim.decay_steps(_optim(), 10, num_steps=100) == [90, 96]
    schedule = optim.learning_rate_schedule(_optim(), 10, num_steps=100)
    lrs = [float(schedule(s)) for s in (0, 89, 90, 95, 96, 99)]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6], rtol=1e-6)


def test_budget_plan_fits_the_steps_and_both_decays_into_the_time_left():
    # Simulated clock: 30 s of compile, then 0.5 s a step, a 2-minute budget, 500 planned
    # steps: at most (120 - 30 - 5 s reserve) / 0.5 s = 170 steps fit.
    plan = optim.BudgetPlan(_optim(), 10, 500, budget_s=120.0, begun=0.0)
    now, step, lrs = 30.0, 0, []
    while step < plan.num_steps:
        lrs.append(plan.learning_rate(step))
        step += 1
        now += 0.5
        if plan.measuring(step):
            plan.observe(step, now)
    assert now <= 120.0 - plan.RESERVE_S
    assert 155 <= plan.num_steps <= 170 and step == plan.num_steps
    np.testing.assert_allclose(lrs[-1], 1e-6, rtol=1e-6)  # both decays applied
    first_decay = lrs.index(lrs[0] * 0.1)
    assert abs(first_decay / plan.num_steps - 0.9) < 0.02


def test_budget_plan_keeps_the_configured_run_when_it_fits():
    plan = optim.BudgetPlan(_optim(), 10, 500, budget_s=3600.0, begun=0.0)
    for step in range(1, 30):
        plan.observe(step, 10.0 + 0.5 * step)
    assert plan.num_steps == 500 and not plan.fitted
    assert optim.BudgetPlan(_optim(), 10, 500, budget_s=0.0, begun=0.0).measuring(1) is False
