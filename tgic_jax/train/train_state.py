"""The train state: what a run needs to continue, created directly with its shardings."""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from tgic_jax.model.layers import Params
from tgic_jax.model.taco import TACO, init_variables
from tgic_jax.train import distributed, sharding


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: params, optimizer state, step, rng."""

    step: jax.Array
    params: Params
    opt_state: optax.OptState
    rng: jax.Array


def create_train_state(
    model: TACO, optimizer: optax.GradientTransformation, seed: int
) -> TrainState:
    """A fresh state (pure: jit it with out_shardings to create it already sharded)."""
    # Initial values from XLA's RngBitGenerator: ~430 threefry initializers took 30-60 s to
    # compile on CPU, this takes seconds. It is deterministic for a given platform, so every
    # process creates the same replicated params. The noise of training steps uses threefry
    # (`rng`), whose values do not depend on how the batch is sharded.
    init_rng = jax.random.key(seed, impl="unsafe_rbg")
    train_rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    params = init_variables(model, init_rng)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=train_rng,
    )


def abstract_train_state(model, optimizer, seed: int, mesh, mesh_config=None):
    """(the state's shardings, the state as shapes with those shardings): nothing compiled.

    Enough to compile the train step (`lower`) while the state itself is being made.
    """
    shapes = jax.eval_shape(functools.partial(create_train_state, model, optimizer, seed))
    shardings = sharding.state_sharding(mesh, shapes, mesh_config)
    abstract = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
    return shardings, abstract


def init_sharded_state(model, optimizer, seed: int, mesh, mesh_config=None):
    """(state created directly with its shardings, the shardings, the abstract state)."""
    make = functools.partial(create_train_state, model, optimizer, seed)
    shardings, abstract = abstract_train_state(model, optimizer, seed, mesh, mesh_config)
    # Compile, then meet, then run: the first multi-host program forms the CPU (gloo)
    # communicator, which waits only 30 s for the other hosts (see `distributed.sync_hosts`), and
    # hosts finish compiling at different times under load.
    create = jax.jit(make, out_shardings=shardings).lower().compile()
    distributed.sync_hosts("tgic_jax/init_compiled")
    return create(), shardings, abstract
