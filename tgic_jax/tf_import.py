"""TensorFlow for host-side work only: imported on first use, with every GPU hidden from it.

TF runs only the TFDS input source here (the `tfds` extra); JAX owns the accelerators.
A TF that saw the GPUs would reserve their memory at its first op, so every TF user in
the package goes through `import_tensorflow` instead of `import tensorflow`.
"""

from __future__ import annotations

import functools


@functools.cache
def import_tensorflow():
    """The `tensorflow` module, its GPUs hidden (once per process; ~3 s the first time)."""
    import tensorflow as tf  # deferred: most commands never need TF

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialized: GPUs are then hidden or unused by our ops
        pass
    return tf
