r"""A small TACO that trains on a CPU: Kodak crops, MiniLM text, rate + MSE + LPIPS.

For the offline demo and smoke runs (no MS-COCO, no CLIP weights, so k_J = 0):
  python train.py --config configs/small.py --workdir /tmp/taco_small
The `tiny` variant is for tests (random hash-based text states, 64x64 crops, no LPIPS):
  python train.py --config configs/small.py:tiny --workdir /tmp/taco_tiny --config.total_steps=20
"""

from pathlib import Path

import ml_collections

# The repository's Kodak images and captions (the config files live beside them).
KODAK = Path(__file__).resolve().parents[1] / "data" / "kodak"


def get_config(arg=None):
    """The small CPU config; arg 'tiny' gives the test-size variant."""
    if arg not in (None, "", "tiny"):  # a typo (small.py:tny) must not train the full config
        raise ValueError(f"configs/small.py: unknown argument {arg!r} (known: 'tiny')")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.seed = 0
    # -1: epochs x steps per epoch from config.optim; > 0 overrides it.
    config.total_steps = -1
    # Wall-clock budget of a run in minutes, compile included (0: none); the run checkpoints
    # and stops when it is spent (on a pod: all hosts at the same step, when any one is over).
    config.train_time_limit_minutes = 0.0

    config.model = ml_collections.ConfigDict(
        dict(
            N=64, M=96, slices=(8, 8, 16, 16, 48), text_dim=384, heads=8,
            # "bfloat16": the transforms compute in bfloat16 (entropy model, loss and
            # params stay float32); measured against float32 in docs/BENCHMARKS.md.
            compute_dtype="float32",
        )
    )  # fmt: skip
    config.text = ml_collections.ConfigDict(dict(encoder="minilm", path="", max_length=38))
    config.loss = ml_collections.ConfigDict(
        dict(
            lmbda=0.0067,  # a mid rate point of the small model
            k_p=1.0,
            k_j=0.0,  # CLIP image weights are not available offline
            lpips_input_range="minus_one_one",
            lpips_float64=False,  # the CPU demo: float32 is faster, parity is not its aim
            clip_path="openai/clip-vit-base-patch32",
            clip_embed_weight=40.0,
            clip_logit_scale_log=2.6592,
            joint_group_size=8,
        )
    )
    config.optim = ml_collections.ConfigDict(
        dict(
            # 10x the paper's 1e-4: minutes of CPU training, not 50 epochs of MS-COCO. Over
            # the demo's 800 steps 1e-3 ended nearer JPEG than 5e-4 (BENCHMARKS.md, "The demo").
            learning_rate=1e-3,
            # 10x the paper's 1e-3: at 1e-3 the bottleneck's aux loss was still ~700 after a
            # demo's ~1,000 steps (the quantiles move ~1e-3 a step), so z was coded around
            # unconverged medians.
            aux_learning_rate=1e-2,
            grad_clip_norm=1.0,
            epochs=50,
            decay_epochs=(45, 48),
            decay_factor=0.1,
            # 12 images x 16/3 crops counted as one epoch: 50 epochs of batch 4 are 800 steps,
            # what fits `make demo` in 15 min on a 2-core machine that runs a step in 0.7 s.
            # Batch 4 beat JPEG more often than batch 2 (BENCHMARKS.md, "The demo").
            train_images=64,
        )
    )
    config.input = ml_collections.ConfigDict(
        dict(
            source="folder",
            tfds_name="coco_captions",
            tfds_split="train",
            data_dir="",
            folder=str(KODAK),
            captions=str(KODAK / "captions.json"),
            max_images=12,  # kodim01-12 train, kodim13-24 stay unseen
            cache=True,
            crop_size=128,  # a multiple of the model's stride, 64
            batch_size_per_device=4,
            shuffle_buffer=64,
        )
    )
    config.ckpt = ml_collections.ConfigDict(dict(every_steps=100, keep=3, use_async=True))
    config.log_every_steps = 10
    # "start:stop" (e.g. "100:110"): a jax.profiler trace of those steps into
    # <workdir>/tensorboard for TensorBoard's profile plugin; "" for none.
    config.profile_steps = ""
    config.eval = ml_collections.ConfigDict(
        dict(folder="", captions="", every_steps=0, every_epochs=0, max_images=4, images_to_log=2)
    )
    config.mesh = ml_collections.ConfigDict(dict(data=-1))

    if tiny:
        config.model = ml_collections.ConfigDict(
            dict(N=16, M=24, slices=(2, 2, 4, 4, 12), text_dim=16, heads=4,
                 compute_dtype="float32")
        )  # fmt: skip
        config.text = ml_collections.ConfigDict(dict(encoder="random", path="", max_length=8))
        config.loss.lmbda = 0.013
        config.loss.k_p = 0.0
        config.optim.learning_rate = 1e-3  # a few hundred steps must show learning
        config.optim.aux_learning_rate = 1e-3
        config.optim.train_images = 1000
        config.input.crop_size = 64
        config.input.batch_size_per_device = 2
        config.input.shuffle_buffer = 16
        config.ckpt.every_steps = 10
        config.log_every_steps = 5
    return config
