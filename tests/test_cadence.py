"""The one rule of "is it time" in the training loop (`train/cadence.py`)."""

from tgic_jax.train.cadence import Cadence


def _due_steps(cadence, last, start=1):
    return [s for s in range(start, last + 1) if cadence.due(s, last)]


def test_every_n_steps_is_due_at_the_multiples_and_at_the_last_step_only_when_asked():
    assert _due_steps(Cadence.every(steps=5), 17) == [5, 10, 15]
    assert _due_steps(Cadence.every(steps=5, at_last=True), 17) == [5, 10, 15, 17]
    assert _due_steps(Cadence.every(steps=1), 4) == [1, 2, 3, 4]


def test_epochs_are_converted_to_steps_once_and_either_count_makes_it_due():
    # 3 steps an epoch: every 2 epochs is every 6 steps; with every 4 steps too, either.
    assert _due_steps(Cadence.every(epochs=2, steps_per_epoch=3), 13) == [6, 12]
    assert Cadence.every(epochs=2, steps_per_epoch=3).periods == (6,)
    assert _due_steps(Cadence.every(4, 2, 3), 13) == [4, 6, 8, 12]


def test_a_cadence_without_a_period_is_never_due_not_even_at_the_last_step():
    never = Cadence.every(steps=0, epochs=0, steps_per_epoch=7, at_last=True)
    assert _due_steps(never, 20) == [] and not never.at_last
    assert not Cadence().due(10, 10)


def test_a_resumed_run_keeps_the_beat_of_the_global_step():
    # Resumed after step 7 of a run saving every 5: the next saves are 10 and 15, not 12.
    assert _due_steps(Cadence.every(steps=5), 15, start=8) == [10, 15]


def test_the_last_step_follows_a_plan_that_shrank_the_run():
    log = Cadence.every(steps=100, at_last=True)
    assert log.due(37, last_step=37) and not log.due(37, last_step=1000)
