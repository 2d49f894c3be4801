r"""A small TACO that trains on a CPU: Kodak crops, MiniLM text, rate + MSE + LPIPS.

For the offline demo and smoke runs (no MS-COCO, no CLIP weights, so k_J = 0):
  python train.py --config configs/small.py --workdir /tmp/taco_small
The `tiny` variant is for tests (random hash-based text states, 64x64 crops, no LPIPS):
  python train.py --config configs/small.py:tiny --workdir /tmp/taco_tiny --config.total_steps=20
Overrides of configs/base.py, which declares every key with its unit.
"""

import importlib.util
from pathlib import Path

# configs/ is not a package: the base is loaded from beside this file.
_spec = importlib.util.spec_from_file_location("_tgic_base", Path(__file__).with_name("base.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)
KODAK = base.KODAK


def get_config(arg=None):
    """The small CPU config; arg 'tiny' gives the test-size variant."""
    if arg not in (None, "", "tiny"):  # a typo (small.py:tny) must not train the full config
        raise ValueError(f"configs/small.py: unknown argument {arg!r} (known: 'tiny')")
    config = base.get_config()
    config.log_every_steps = 10
    config.model.update(N=64, M=96, slices=(8, 8, 16, 16, 48), text_dim=384)
    config.text.update(encoder="minilm", path="")
    config.loss.lmbda = 0.0067  # a mid rate point of the small model
    config.loss.k_p = 1.0
    config.loss.k_j = 0.0  # CLIP image weights are not available offline
    config.loss.lpips_float64 = False  # the CPU demo: float32 is faster, parity is not its aim
    # 10x the paper's 1e-4: minutes of CPU training, not 50 epochs of MS-COCO. Over the
    # demo's 800 steps 1e-3 ended nearer JPEG than 5e-4 (BENCHMARKS.md, "The demo").
    config.optim.learning_rate = 1e-3
    # 10x the paper's 1e-3: at 1e-3 the bottleneck's aux loss was still ~700 after a demo's
    # ~1,000 steps (the quantiles move ~1e-3 a step), so z was coded around unconverged medians.
    config.optim.aux_learning_rate = 1e-2
    # 12 images x 16/3 crops counted as one epoch: 50 epochs of batch 4 are 800 steps, what
    # fits `make demo` in 15 min on a 2-core machine that runs a step in 0.7 s. Batch 4 beat
    # JPEG more often than batch 2 (BENCHMARKS.md, "The demo").
    config.optim.epoch_pairs = 64
    config.input.update(source="folder", folder=str(KODAK), captions=str(KODAK / "captions.json"))
    config.input.max_images = 12  # kodim01-12 train, kodim13-24 stay unseen
    config.input.cache = True
    config.input.crop_size = 128  # a multiple of the model's stride, 64
    config.input.batch_size_per_device = 4
    config.input.shuffle_buffer = 64
    config.ckpt.every_steps = 100
    config.eval.max_images = 4
    config.eval.images_to_log = 2

    if arg == "tiny":
        config.model.update(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=4)
        config.text.update(encoder="random", max_length=8)
        config.loss.lmbda = 0.013
        config.loss.k_p = 0.0
        config.optim.learning_rate = 1e-3  # a few hundred steps must show learning
        config.optim.aux_learning_rate = 1e-3
        config.optim.epoch_pairs = 1000
        config.input.crop_size = 64
        config.input.batch_size_per_device = 2
        config.input.shuffle_buffer = 16
        config.ckpt.every_steps = 10
        config.log_every_steps = 5
    return config
