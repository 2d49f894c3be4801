"""The update step: a pure function of (state, frozen loss weights, global batch, main lr).

It is jitted with explicit shardings and the state donated; data parallelism comes from the
batch being sharded over the `data` mesh axis. The quantiles of the bottleneck take their gradient
from the auxiliary loss, every other parameter from the rate-distortion loss.
"""

from __future__ import annotations

import flax
import jax
import optax

from tgic_jax.model.layers import Params
from tgic_jax.model.taco import TACO
from tgic_jax.train import optim, sharding
from tgic_jax.train.optim import QUANTILES
from tgic_jax.train.train_state import TrainState


def make_train_step(model: TACO, loss_fn, optimizer, text_fn=None, clip_text_fn=None):
    """The pure update: (state, frozen, batch, main learning rate) -> (new state, metrics).

    With text_fn(frozen["text"], ids, mask) the batch carries "input_ids" and
    "attention_mask" and the frozen text tower runs here, inside the step; with
    clip_text_fn(frozen["clip"], ids, mask) the same tokens give the joint term's CLIP text
    features. Without them the batch carries the states as "text" (and "clip_text").
    """

    def train_step(state: TrainState, frozen: Params, batch: dict, learning_rate: jax.Array):
        noise_rng = jax.random.fold_in(state.rng, state.step)
        if text_fn is None:
            text = batch["text"]
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            text = jax.lax.stop_gradient(text_fn(frozen["text"], ids, mask))
        clip_text = batch.get("clip_text")  # precomputed (benchmarks) unless computed here
        if clip_text_fn is not None:
            clip_text = clip_text_fn(frozen["clip"], batch["input_ids"], batch["attention_mask"])

        def main_loss(params):
            outputs = model.apply(
                {"params": params},
                batch["image"],
                text,
                train=True,
                rngs={"noise": noise_rng},
            )
            return loss_fn(frozen, outputs, batch["image"], clip_text)

        def aux_loss(params):
            return model.apply({"params": params}, method=TACO.aux_loss)

        (_, metrics), grads = jax.value_and_grad(main_loss, has_aux=True)(state.params)
        aux, aux_grads = jax.value_and_grad(aux_loss)(state.params)
        grads = _with_quantile_grads(grads, aux_grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        updates = optim.apply_learning_rate(updates, learning_rate)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(
            metrics,
            aux_loss=aux,
            grad_norm=_main_grad_norm(grads),
            learning_rate=learning_rate,
        )
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def jit_train_step(train_step, mesh, state_shardings):
    """jit with explicit shardings: state as given (donated), batch on `data`."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(state_shardings, replicated, sharding.batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )


def _with_quantile_grads(grads: Params, aux_grads: Params) -> Params:
    """The main gradients with the quantiles' entry replaced by the aux-loss gradient."""
    flat = flax.traverse_util.flatten_dict(grads)
    aux_flat = flax.traverse_util.flatten_dict(aux_grads)
    for k in flat:
        if k[-2:] == QUANTILES:
            flat[k] = aux_flat[k]
    return flax.traverse_util.unflatten_dict(flat)


def _main_grad_norm(grads: Params) -> jax.Array:
    flat = flax.traverse_util.flatten_dict(grads)
    return optax.global_norm([v for k, v in flat.items() if k[-2:] != QUANTILES])
