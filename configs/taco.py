r"""The authors' TACO training (Lee et al., ICML 2024), one rate point per lambda.

What "the authors' training" means row by row, and the test that pins each row, is in
docs/RECIPE.md. Launch (one host; on a pod run the same command on every host), with
MS-COCO as the official files (train2014/ + annotations/captions_train2014.json):
  python train.py --config configs/taco.py:lmbda=0.0004 --workdir /tmp/taco_0004 \
      --config.input.data_dir=/data/MSCOCO
Override any value: --config.loss.k_p=3.5 --config.input.batch_size_per_device=8
"""

import importlib.util
import logging
from pathlib import Path

# configs/ is not a package: the base is loaded from beside this file.
_spec = importlib.util.spec_from_file_location("_tgic_base", Path(__file__).with_name("base.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)
KODAK = base.KODAK

# lambda -> (k_P, k_J) that the authors confirm: their README's launch command. Their code
# and checkpoint names say nothing about the perceptual weights of other lambdas.
CONFIRMED_RATE_POINTS = {0.0004: (3.5, 0.0025)}
# Used for every other lambda, with a logged warning (not a claim that they trained so).
DEFAULT_WEIGHTS = (3.5, 0.0025)

# (image, caption) pairs of train2014 with shorter side >= 256. captions_train2014.json
# holds 414,113 captions of 82,783 images (COCO 2014's published counts); the short-side
# filter can only lower it. The coco_files source counts the real number from the data
# and uses that; this figure serves the tfds source, which has no cheap count.
COCO_TRAIN2014_CAPTIONS = 414_113


def _parse(arg):
    """'lmbda=0.0004,runlocal' -> {'lmbda': '0.0004', 'runlocal': True}."""
    out = {}
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip() if value else True
    return out


def get_config(arg=None):
    """Returns the authors' config; `arg` picks the rate point, e.g. 'lmbda=0.0016'."""
    args = _parse(arg)
    unknown = sorted(set(args) - {"lmbda", "runlocal"})
    if unknown:  # a typo must not silently train the default rate point
        raise ValueError(f"configs/taco.py: unknown argument {unknown} (known: lmbda, runlocal)")
    lmbda = float(args.get("lmbda", 0.0004))
    if lmbda <= 0:
        raise ValueError(f"lmbda must be > 0: {lmbda}")
    confirmed = lmbda in CONFIRMED_RATE_POINTS
    k_p, k_j = CONFIRMED_RATE_POINTS.get(lmbda, DEFAULT_WEIGHTS)
    if not confirmed:
        logging.warning(
            "lmbda=%g: the authors confirm (k_P, k_J) only for lambda=0.0004; using %s, "
            "which is not confirmed for this rate point",
            lmbda,
            DEFAULT_WEIGHTS,
        )

    config = base.get_config()
    # Their PyTorch run: float32 matmuls, convolutions in TF32 on Ampere (cuDNN's
    # default). 'highest' is float32 everywhere (TPU: no bf16 passes; GPU: no TF32).
    config.jax_default_matmul_precision = "highest"
    # Conditioning text: frozen CLIP ViT-B/32 text tower, last_hidden_state, 38 tokens (the
    # base's); the same tokens give the joint term's CLIP text features.
    config.loss.lmbda = lmbda
    config.loss.k_p = k_p
    config.loss.k_j = k_j
    config.loss.weights_confirmed = confirmed
    # The authors call lpips.LPIPS(net='alex')(x_hat, x) on [0, 1] images without
    # normalize=True; 'minus_one_one' is LPIPS's own range (the corrected option).
    config.loss.lpips_input_range = "zero_one"
    config.optim.epoch_pairs = COCO_TRAIN2014_CAPTIONS  # replaced by the pairs' count
    config.input.pairs = True  # folder source: one sample per (image, caption) pair
    # After every epoch, as the authors: Kodak 1-24 with their OFA captions, best-by-PSNR /
    # MS-SSIM / bpp / LPIPS checkpoints kept beside the latest.
    config.eval.folder = str(KODAK)
    config.eval.captions = str(KODAK / "captions.json")
    config.eval.every_epochs = 1
    config.eval.max_images = 24
    config.eval.images_to_log = 3
    if args.get("runlocal"):
        config.input.batch_size_per_device = 2
        config.loss.joint_group_size = 2
        config.log_every_steps = 1
    return config
