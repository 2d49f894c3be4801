"""Throughput you can see: FLOPs and memory of the compiled step, MFU, input wait, traces.

Pieces the training loop (and the benchmarks) call:
- `compiled_flops` / `compiled_memory`: XLA's own cost and memory analysis of a compiled
  step. Both describe the partitioned program one device runs, so they are per device.
  XLA counts every floating-point operation of the compiled program (elementwise ones too,
  and the zero taps of the sub-pixel transposed convolutions), so "model FLOPs" here are
  what the device executes, slightly above the useful multiply-adds.
- `peak_flops`: dense bfloat16 peak of one accelerator, from its `device_kind`; None where
  unknown (every CPU), and then no MFU is reported rather than a made-up one.
- `Prefetcher`: host batches prepared and transferred to the devices `depth` steps ahead,
  in a background thread; it counts the time the loop waited for the next batch.
- `ThroughputMeter`: the scalars logged every `log_every_steps` (step time, images/s per
  device, input wait, model TFLOP/s and MFU).
- `StepProfiler`: a `jax.profiler` trace of steps "start:stop" for TensorBoard's profile
  plugin.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

# Dense (no sparsity) bfloat16 peak FLOP/s of one device, from the vendors' data sheets.
# MFU is quoted against this peak whatever the compute dtype (the usual convention): a
# float32 step runs as TF32 on GPUs (half this rate) and as bfloat16 passes on TPUs.
# Matched in order against jax's `device_kind` (substrings), so "v5 lite" precedes "v5" and
# "GB200" precedes "B200".
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    # NVIDIA Blackwell data sheets (dense BF16; the sheets' headline figures are 2:4 sparse,
    # twice these): GB200 (NVL72, a B200 at 1,200 W) 2.5 PFLOP/s per GPU; HGX/DGX B200
    # (1,000 W) 2.25 PFLOP/s.
    ("GB200", 2500e12),
    ("B200", 2250e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM / HBM3; the H200 has the same compute
    ("H200", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports itself as "TPU v5"
    # Google Cloud TPU docs (docs.cloud.google.com/tpu/docs/v6e, /tpu7x), peak BF16 per chip:
    # v6e (Trillium, device_kind "TPU v6 lite") 918 TFLOP/s; TPU7x (Ironwood, device_kind
    # "TPU7x") 2,307 TFLOP/s (its 4,614 is the FP8 figure).
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
    ("TPU7x", 2307e12),
    ("TPU v7", 2307e12),
)


def peak_flops(device_kind: str) -> float | None:
    """Dense bfloat16 peak FLOP/s of a device kind, or None when not in `PEAK_FLOPS`."""
    for pattern, flops in PEAK_FLOPS:
        if pattern.lower() in device_kind.lower():
            return flops
    return None


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled function, per device (XLA's cost analysis)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it: report nothing
        return None
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    flops = float((analysis or {}).get("flops", 0.0))
    return flops if flops > 0 else None


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """Bytes per device of a compiled function: arguments, outputs, temporaries, total."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not implemented on every backend
        return None
    if stats is None:
        return None
    out = {
        "arguments": int(stats.argument_size_in_bytes),
        "outputs": int(stats.output_size_in_bytes),
        "aliased": int(stats.alias_size_in_bytes),  # donated inputs reused as outputs
        "temporaries": int(stats.temp_size_in_bytes),
        "code": int(stats.generated_code_size_in_bytes),
    }
    # Live at once: inputs, the outputs that do not reuse a donated input, temporaries.
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


# ----------------------------------------------------------------------------- input
_DONE = object()


class Prefetcher:
    """Iterates `put(batch)` for the host batches of `source`, `depth` ahead, in a thread.

    `put` turns a host batch into device arrays (e.g. `sharding.make_global_batch`), so the
    transfer of batch n+1 overlaps step n. `wait_s` is the total time `__next__` blocked:
    near zero when input keeps up with the devices.
    """

    def __init__(self, source: Iterator[Any], put: Callable[[Any], Any], depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fill, args=(source, put), name="tgic-prefetch", daemon=True
        )
        self._thread.start()

    def _fill(self, source, put) -> None:
        try:
            for batch in source:
                item = put(batch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_DONE)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
            self._queue.put(err)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        t0 = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if item is _DONE:
            self._queue.put(_DONE)  # later calls stop too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stops the background thread (it may finish the batch it is preparing)."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)


# ----------------------------------------------------------------------------- metrics
class ThroughputMeter:
    """Turns wall time, steps and input wait between two log points into scalars."""

    def __init__(
        self,
        global_batch: int,
        num_devices: int,
        flops_per_step: float | None = None,
        peak_flops_per_device: float | None = None,
    ):
        self.global_batch = int(global_batch)
        self.num_devices = int(num_devices)
        self.flops_per_step = flops_per_step  # per device
        self.peak = peak_flops_per_device
        self.reset(0, 0.0)

    def reset(self, step: int, wait_s: float) -> None:
        """Starts a new interval at `step`, with the input-wait counter at `wait_s`."""
        self._t0, self._step0, self._wait0 = time.perf_counter(), int(step), float(wait_s)

    def scalars(self, step: int, wait_s: float) -> dict[str, float]:
        """The interval's scalars (then a new interval starts); MFU only with a known peak."""
        steps = max(int(step) - self._step0, 1)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        step_time = elapsed / steps
        images_per_s = steps * self.global_batch / elapsed
        out = {
            "step_time_s": step_time,
            "images_per_second": images_per_s,
            "images_per_second_per_device": images_per_s / self.num_devices,
            "input_wait_s": (float(wait_s) - self._wait0) / steps,  # per step
        }
        out["input_wait_fraction"] = out["input_wait_s"] / step_time
        if self.flops_per_step:
            achieved = self.flops_per_step / step_time
            out["model_tflops_per_second_per_device"] = achieved / 1e12
            if self.peak:
                out["mfu"] = achieved / self.peak
        self.reset(step, wait_s)
        return out


# ----------------------------------------------------------------------------- profiler
def parse_profile_steps(spec: str | None) -> tuple[int, int] | None:
    """'100:110' -> (100, 110): trace the steps from 100 up to (not including) 110."""
    if not spec:
        return None
    start, sep, stop = str(spec).partition(":")
    try:
        first, last = int(start), int(stop)
    except ValueError:
        raise ValueError(f"profile_steps must look like '100:110', got {spec!r}") from None
    if not sep or first < 0 or last <= first:
        raise ValueError(f"profile_steps must be 'start:stop' with 0 <= start < stop: {spec!r}")
    return first, last


class StepProfiler:
    """Starts a `jax.profiler` trace before step `start` and stops it after step `stop - 1`.

    The trace lands in `logdir/plugins/profile/<run>/`, where TensorBoard's profile plugin
    (`pip install tensorboard-plugin-profile`) finds it when pointed at `logdir`.
    """

    def __init__(self, spec: str | None, logdir: str | Path):
        self.window = parse_profile_steps(spec)
        self.logdir = str(logdir)
        self.active = False
        self.done = False

    def before_step(self, step: int) -> None:
        """Call with the step about to run (the state's step count)."""
        if self.window and not self.active and not self.done:
            start, stop = self.window
            if start <= step < stop:
                jax.profiler.start_trace(self.logdir)
                self.active = True

    def after_step(self, step: int, outputs: Any) -> None:
        """Call with the step count reached; waits for `outputs` before closing the trace."""
        if self.active and step >= self.window[1]:
            self.stop(outputs)

    def stop(self, outputs: Any = None) -> None:
        """Ends the trace now (also at the end of a run that stopped inside the window)."""
        if self.active:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.active, self.done = False, True
