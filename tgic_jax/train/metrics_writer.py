"""What a run tells its user: TensorBoard scalars and images, and one line per note.

Every note goes through `announce` (the log, and stdout on process 0) and every metric
through `MetricWriter`, so the loop reads as what it does, not as how it prints.
"""

from __future__ import annotations

import logging
import os

import jax


def announce(line: str) -> None:
    """Logs `line` and prints it on process 0 (one line per run, not one per host)."""
    logging.info(line)
    if jax.process_index() == 0:
        print(line, flush=True)


class MetricWriter:
    """TensorBoard scalars (process 0 only) and a console line."""

    def __init__(self, logdir: str | os.PathLike, enabled: bool):
        self._writer = None
        if enabled:
            from tgic_jax.train.summary_writer import SummaryWriter  # no TensorFlow

            self._writer = SummaryWriter(str(logdir))  # str() of an epath keeps gs://

    def write(
        self, step: int, scalars: dict[str, float], prefix: str = "train", progress: str = ""
    ) -> None:
        """Writes scalars at step and prints one line (`progress`, e.g. '5/20 eta 0:01:02')."""
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.scalar(f"{prefix}/{k}", v, step)
            self._writer.flush()
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
        logging.info("[%s] step %d %s", prefix, step, shown)
        if jax.process_index() == 0:
            print(f"[{prefix}] step {progress or step} {shown}", flush=True)

    def write_images(self, step: int, images: list, prefix: str = "eval") -> None:
        """A few originals beside their decoded images (uint8 [H, 2W, 3] each)."""
        if self._writer is not None:
            for i, image in enumerate(images):
                self._writer.image(f"{prefix}/original_decoded_{i}", image, step)
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
