"""Throughput: XLA's FLOPs, the peak table, MFU, input prefetch, the profiler, the train log."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tgic_jax.train import throughput


def test_peak_flops_known_for_h100_a100_and_tpus_and_absent_on_cpu():
    assert throughput.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert throughput.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert throughput.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert throughput.peak_flops("TPU v4") == 275e12
    assert throughput.peak_flops("TPU v5 lite") == 197e12  # v5e, not matched as v5p
    assert throughput.peak_flops("TPU v5") == 459e12
    assert throughput.peak_flops("TPU v5p") == 459e12
    assert throughput.peak_flops("NVIDIA B200") == 2250e12
    assert throughput.peak_flops("NVIDIA GB200") == 2500e12  # not matched as B200
    assert throughput.peak_flops("TPU v6 lite") == 918e12  # v6e
    assert throughput.peak_flops("TPU7x") == 2307e12  # Ironwood, bfloat16 (not FP8's 4,614)
    assert throughput.peak_flops("cpu") is None
    assert throughput.peak_flops(jax.devices()[0].device_kind) is None  # this CPU


def test_compiled_flops_of_a_matmul_are_two_per_multiply_add():
    a, b = jnp.ones((64, 128)), jnp.ones((128, 32))
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    assert throughput.compiled_flops(compiled) == 2 * 64 * 128 * 32
    assert throughput.compiled_flops(object()) is None  # no cost analysis: nothing made up


def test_compiled_flops_are_per_device_when_the_batch_is_split_over_two_devices():
    # MFU divides by one device's peak, so the FLOPs must be one device's share.
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from jax.sharding import NamedSharding, PartitionSpec as P
        from tgic_jax.train import throughput
        mesh = jax.make_mesh((2,), ("data",))
        a = jax.ShapeDtypeStruct((64, 128), jnp.float32, sharding=NamedSharding(mesh, P("data")))
        b = jax.ShapeDtypeStruct((128, 32), jnp.float32, sharding=NamedSharding(mesh, P()))
        print(throughput.compiled_flops(jax.jit(jnp.matmul).lower(a, b).compile()))
        """
    )
    repo = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(repo),
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) == 64 * 128 * 32  # half of 2 * 64 * 128 * 32


def test_compiled_memory_counts_arguments_outputs_and_temporaries():
    x = jnp.ones((256, 256), jnp.float32)  # 256 KiB
    compiled = jax.jit(lambda x: (x @ x).sum(0)).lower(x).compile()
    memory = throughput.compiled_memory(compiled)
    assert memory["arguments"] == 256 * 256 * 4
    assert memory["outputs"] == 256 * 4
    assert memory["total"] >= memory["arguments"] + memory["outputs"]


def test_meter_reports_images_per_device_and_input_wait_and_mfu_only_with_a_peak():
    meter = throughput.ThroughputMeter(global_batch=16, num_devices=4, flops_per_step=2e12)
    meter.reset(10, wait_s=1.0)
    time.sleep(0.2)
    s = meter.scalars(20, wait_s=1.5)
    assert 0.02 <= s["step_time_s"] < 0.1  # 10 steps in ~0.2 s
    assert s["images_per_second_per_device"] == pytest.approx(s["images_per_second"] / 4)
    assert s["images_per_second"] == pytest.approx(160 / (10 * s["step_time_s"]))
    assert s["input_wait_s"] == pytest.approx(0.05)  # 0.5 s over 10 steps
    assert "mfu" not in s  # no peak known
    assert s["model_tflops_per_second_per_device"] == pytest.approx(2.0 / s["step_time_s"])
    peaked = throughput.ThroughputMeter(16, 4, flops_per_step=2e12, peak_flops_per_device=1e15)
    time.sleep(0.1)
    s = peaked.scalars(1, 0.0)
    assert s["mfu"] == pytest.approx(2e12 / s["step_time_s"] / 1e15)


def _counting_source(n, delay_s=0.0, pulled=None):
    for i in range(n):
        time.sleep(delay_s)
        if pulled is not None:
            pulled.append(i)
        yield {"x": np.full((2,), i)}


def test_prefetcher_prepares_batches_ahead_in_order_and_bounded_by_its_depth():
    pulled = []
    prefetch = throughput.Prefetcher(_counting_source(20, pulled=pulled), lambda b: b, depth=2)
    first = next(prefetch)
    time.sleep(0.3)  # the "step": the thread fills the queue meanwhile, and no further
    # One consumed, two queued, one in the thread's hands waiting for room.
    assert len(pulled) == 4
    rest = [int(b["x"][0]) for b in prefetch]
    assert [int(first["x"][0])] + rest == list(range(20))
    prefetch.close()


def test_prefetcher_wait_time_shows_a_slow_input_and_vanishes_for_a_fast_one():
    slow = throughput.Prefetcher(_counting_source(5, delay_s=0.05), lambda b: b, depth=2)
    list(slow)
    assert slow.wait_s >= 0.15  # the loop waited for most of the 0.25 s of input
    fast = throughput.Prefetcher(_counting_source(5), lambda b: b, depth=2)
    time.sleep(0.2)
    for _ in range(2):  # two already transferred: no wait
        next(fast)
    assert fast.wait_s < 0.01
    fast.close()


def test_prefetcher_puts_batches_with_the_given_function_and_reraises_input_errors():
    def broken():
        yield {"x": np.zeros(2)}
        raise OSError("disk gone")

    prefetch = throughput.Prefetcher(broken(), lambda b: {"x": jnp.asarray(b["x"]) + 1})
    assert isinstance(next(prefetch)["x"], jax.Array)
    with pytest.raises(OSError, match="disk gone"):
        next(prefetch)
    with pytest.raises(ValueError, match="depth"):
        throughput.Prefetcher(iter([]), lambda b: b, depth=0)


def test_prefetcher_close_stops_the_thread_of_an_endless_source():
    def endless():
        while True:
            yield {"x": np.zeros(1)}

    prefetch = throughput.Prefetcher(endless(), lambda b: b)
    next(prefetch)
    prefetch.close()
    assert not any(t.name == "tgic-prefetch" and t.is_alive() for t in threading.enumerate())


def test_profile_steps_parse_and_bad_values_fail_clearly():
    assert throughput.parse_profile_steps("100:110") == (100, 110)
    assert throughput.parse_profile_steps("") is None
    for bad in ("100", "a:b", "10:5", "-1:3"):
        with pytest.raises(ValueError, match="profile_steps"):
            throughput.parse_profile_steps(bad)


def _scalars(logdir):
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {
        tag: [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


@pytest.mark.slow
def test_tiny_training_run_logs_throughput_to_tensorboard_and_traces_the_asked_steps(
    tmp_path, kodak_dir
):
    from configs.small import get_config
    from tgic_jax.train import trainer

    config = get_config("tiny")
    config.input.folder = str(kodak_dir)
    config.input.captions = str(kodak_dir / "captions.json")
    config.input.max_images = 2
    config.total_steps = 4
    config.log_every_steps = 2
    config.profile_steps = "1:3"
    trainer.train_and_evaluate(config, tmp_path / "run")

    scalars = _scalars(tmp_path / "run" / "tensorboard")
    for tag in (
        "images_per_second_per_device",
        "step_time_s",
        "input_wait_s",
        "model_tflops_per_second_per_device",
    ):
        assert len(scalars[f"train/{tag}"]) == 2, tag  # logged at steps 2 and 4
        assert all(np.isfinite(v) and v >= 0 for v in scalars[f"train/{tag}"]), tag
    assert min(scalars["train/images_per_second_per_device"]) > 0
    assert "train/mfu" not in scalars  # no known peak for a CPU: absent, not invented
    traces = list((tmp_path / "run" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
