r"""Every config key of a training run, declared once, with its unit and its default.

configs/taco.py (the authors' training) and configs/small.py (the CPU demo) start from
`get_config()` here and override only what differs, as flax's examples/*/configs do. A key
that is not here is an error at start-up (tgic_jax/config.py names the closest known key),
so a new key is added here first. None means "nothing set"; the comment says what the run
does then. At start-up each section becomes a frozen dataclass of tgic_jax/config.py.
"""

from pathlib import Path

import ml_collections
from ml_collections.config_dict import placeholder

# The repository's Kodak images and captions (the config files live beside them).
KODAK = Path(__file__).resolve().parents[1] / "data" / "kodak"


def get_config(arg=None):
    """The base config: the authors' model and schedule, the code's defaults elsewhere."""
    if arg:
        raise ValueError(f"configs/base.py takes no argument: {arg!r}")
    config = ml_collections.ConfigDict()
    config.seed = 0  # parameter init, data order and crops
    # Steps of the run; None: epochs x steps per epoch from config.optim.
    config.total_steps = placeholder(int)
    # Wall-clock budget of a run in minutes, compile included (0: none); the run checkpoints
    # and stops when it is spent (on a pod: all hosts at the same step, when any one is over).
    config.train_time_limit_minutes = 0.0
    # jax_default_matmul_precision ('highest': float32 everywhere); None: JAX's default.
    config.jax_default_matmul_precision = placeholder(str)
    config.log_every_steps = 100  # steps between logged train metrics
    # "start:stop" (e.g. "100:110"): a jax.profiler trace of those steps into
    # <workdir>/tensorboard for TensorBoard's profile plugin; "" for none.
    config.profile_steps = ""

    config.model = ml_collections.ConfigDict()
    config.model.N = 192  # channels of the transforms g_a, g_s
    config.model.M = 320  # channels of the latent y
    config.model.slices = (16, 16, 32, 64, 192)  # channels of y's context slices (sum: M)
    config.model.text_dim = 512  # width of the text states the model is conditioned on
    config.model.heads = 8  # attention heads of the text adapter
    # "bfloat16": mixed precision for the transforms (entropy model, likelihoods, loss and
    # params stay float32). float32 reproduces the authors' arithmetic.
    config.model.compute_dtype = "float32"

    # The frozen text encoder of the conditioning text.
    config.text = ml_collections.ConfigDict()
    config.text.encoder = "clip"  # 'clip', 'minilm' or 'random' (tests: hash-based states)
    config.text.path = "openai/clip-vit-base-patch32"  # weights; "" the encoder's default
    config.text.max_length = 38  # tokens
    config.text.width = placeholder(int)  # 'random' only: state width; None: model.text_dim

    config.loss = ml_collections.ConfigDict()
    config.loss.lmbda = 0.0004  # rate-distortion trade-off (MSE on [0, 255] images)
    config.loss.k_p = 3.5  # LPIPS-Alex weight
    config.loss.k_j = 0.0025  # joint image-text (CLIP) weight
    config.loss.weights_confirmed = True  # False: (k_p, k_j) not confirmed for this lmbda
    # LPIPS's input range: 'minus_one_one' is LPIPS's own; 'zero_one' is what the authors
    # feed (lpips.LPIPS(net='alex')(x_hat, x) on [0, 1] images without normalize=True).
    config.loss.lpips_input_range = "minus_one_one"
    # LPIPS's network in float64 (where the backend has it): its ReLU / max-pool near-ties
    # are then decided as exact arithmetic decides them. False: float32.
    config.loss.lpips_float64 = True
    config.loss.clip_path = "openai/clip-vit-base-patch32"  # the joint term's CLIP weights
    config.loss.clip_embed_weight = 40.0  # weight of the joint term's embedding distance
    config.loss.clip_logit_scale_log = 2.6592  # log of CLIP's logit scale (ln 14.29)
    # Images per joint-term group (the authors' per-GPU batch: 8, averaged by DDP).
    config.loss.joint_group_size = 8
    # Resize for CLIP: 'linear' is torchvision's bilinear with antialias; 'cubic' CLIP's
    # processor.
    config.loss.clip_resize_method = "linear"

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1e-4  # main Adam
    config.optim.aux_learning_rate = 1e-3  # aux Adam (the bottleneck's quantiles)
    config.optim.grad_clip_norm = 1.0  # global L2 norm of the main gradients
    config.optim.epochs = 50
    config.optim.decay_epochs = (45, 48)  # epochs after which the learning rate drops
    config.optim.decay_factor = 0.1  # the drop, a factor per decay epoch
    # (image, caption) pairs in an epoch; replaced by the pairs' count when the source
    # counts them. Older runs' config.json call it optim.train_images.
    config.optim.epoch_pairs = 414_113

    config.input = ml_collections.ConfigDict()
    config.input.source = "coco_files"  # 'coco_files' (official layout), 'tfds' or 'folder'
    config.input.tfds_name = "coco_captions"
    config.input.tfds_split = "train"
    config.input.data_dir = ""  # the COCO root holding train2014/ and annotations/
    config.input.folder = ""  # folder source: the images
    config.input.captions = ""  # folder source: captions JSON; "" for none
    config.input.pairs = False  # folder source: one sample per (image, caption) pair
    config.input.max_images = placeholder(int)  # folder source: the first N; None: all
    config.input.min_short_side = 256  # pixels; pair sources drop smaller images
    config.input.cache = False  # keep decoded images in host memory
    config.input.crop_size = 256  # pixels, a multiple of the model's stride 64
    config.input.batch_size_per_device = 8  # images
    config.input.shuffle_buffer = 2_000  # examples (tfds source)
    config.input.workers = placeholder(int)  # decoding threads; None: min(32, CPUs)
    config.input.prefetch_batches = 2  # batches staged on the devices ahead of the step

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 5_000  # steps between checkpoints
    config.ckpt.keep = 3  # latest checkpoints kept (best-by-metric ones are kept beside)
    config.ckpt.use_async = True  # write checkpoints in a background thread

    # Per-epoch evaluation and best-by-metric selection; folder "" for none.
    config.eval = ml_collections.ConfigDict()
    config.eval.folder = ""  # images
    config.eval.captions = ""  # captions JSON; "" for none
    config.eval.every_steps = 0  # steps between evaluations (0: by epochs only)
    config.eval.every_epochs = 0  # epochs between evaluations (0: never by epochs)
    config.eval.max_images = placeholder(int)  # the first N images; None: all
    config.eval.images_to_log = 0  # reconstructions written to TensorBoard

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = placeholder(int)  # devices on the data axis; None: all
    return config
