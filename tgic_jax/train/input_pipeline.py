"""Training input: random crops of captioned images, as host-local numpy batches.

Two sources (config.input.source):
- ``tfds``: TFDS ``coco_captions`` (MS-COCO 2014 with its ~5 captions per image), as in
  the paper; each process reads its own `tfds.even_splits` part.
- ``folder``: a folder of images and a captions JSON in Kodak's format
  (``{"kodim01.png": "a caption", ...}``; a value may also be a list of captions, of which
  each example draws one at random: the rule of `tgic_jax.captions`).

Per example: images smaller than the crop are dropped (not padded, not crashed on), one
random crop_size x crop_size crop, one caption picked at random. tf.data runs on the CPU
only (TensorFlow is told not to see GPUs). Batches are host-local dicts
``{"image": float32 [b, H, W, 3] in [0, 1], "caption": list[str]}``; `tokenize_batches`
replaces the captions by token ids and masks (the text tower runs in the train step).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ml_collections
import numpy as np

from tgic_jax import image_io
from tgic_jax.tf_import import import_tensorflow

_SEP = "\x1f"  # joins a file's captions into one tf.string (never in a caption)


# ----------------------------------------------------------------------------- sources
def read_captions(captions_path: str | Path) -> dict[str, list[str]]:
    """Captions JSON -> {file name: [captions]}: `tgic_jax.captions.read_captions`, strict."""
    from tgic_jax.captions import read_captions as read

    return read(captions_path)


def list_folder(
    folder: str | Path, captions_path: str | Path | None = None, max_images: int = 0
) -> list[tuple[Path, list[str]]]:
    """Sorted (image path, captions) pairs of the captioned images present in `folder`.

    Images without a caption are left out: every training example needs one (evaluation's
    `datasets.folder_set` lists the same images but codes those with the empty caption).
    """
    from tgic_jax.captions import lookup

    folder = Path(folder)
    captions = read_captions(captions_path or folder / "captions.json")
    listed = [(p, lookup(captions, p.name)) for p in image_io.list_images(folder)]
    items = [(p, caps) for p, caps in listed if caps is not None]
    if not items:
        raise FileNotFoundError(f"no captioned images in {folder} ({captions_path})")
    return items[:max_images] if max_images else items


def folder_examples(
    folder: str | Path,
    captions_path: str | Path | None = None,
    max_images: int = 0,
    process_index: int = 0,
    process_count: int = 1,
):
    """tf.data of {"image": uint8 [h,w,3], "captions": string [n]} for this process's files."""
    tf = import_tensorflow()
    items = list_folder(folder, captions_path, max_images)
    if len(items) >= process_count:
        items = items[process_index::process_count]  # disjoint shares when there are enough
    paths = [str(p) for p, _ in items]
    caps = [_SEP.join(c) for _, c in items]
    ds = tf.data.Dataset.from_tensor_slices((paths, caps))

    def load(path, cap):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return {"image": image, "captions": tf.strings.split(cap, _SEP)}

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def tfds_examples(
    name: str = "coco_captions",
    split: str = "train",
    data_dir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
):
    """tf.data of {"image", "captions"} from TFDS, this process's even split."""
    tf = import_tensorflow()
    import tensorflow_datasets as tfds

    part = tfds.even_splits(split, n=process_count)[process_index]
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    ds = tfds.load(
        name, split=part, data_dir=data_dir or None, shuffle_files=True, read_config=read_config
    )

    def select(ex):
        return {"image": ex["image"], "captions": ex["captions"]["text"]}

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- crops
def usable_examples(ds, crop_size: int):
    """Drops images smaller than the crop (before `repeat`: an empty share stays visible)."""
    tf = import_tensorflow()

    def big_enough(ex):
        shape = tf.shape(ex["image"])
        return tf.logical_and(shape[0] >= crop_size, shape[1] >= crop_size)

    return ds.filter(big_enough)


def crop_examples(ds, crop_size: int, seed: int):
    """Random crop in [0, 1] and one random caption (images at least crop_size on a side)."""
    tf = import_tensorflow()

    def crop(i, ex):
        # Stateless ops keyed by the element's position: the same crops and captions on
        # every run with this seed, however the parallel map schedules its calls.
        key = tf.stack([tf.cast(seed, tf.int64), i])
        image = tf.image.stateless_random_crop(ex["image"], (crop_size, crop_size, 3), seed=key)
        n = tf.shape(ex["captions"])[0]
        pick = tf.random.stateless_uniform((), key + [0, 1 << 40], 0, n, dtype=tf.int32)
        return {
            "image": tf.cast(image, tf.float32) / 255.0,
            "caption": ex["captions"][pick],
        }

    return ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    input_config,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
):
    """The batched, shuffled, repeated tf.data pipeline for config.input (host-local)."""
    tf = import_tensorflow()
    seed = int(seed) + 1000 * process_index  # different crops on every host
    if input_config.source == "folder":
        ds = folder_examples(
            input_config.folder,
            input_config.get("captions") or None,
            int(input_config.get("max_images", 0)),
            process_index,
            process_count,
        )
        where = str(input_config.folder)
    elif input_config.source == "tfds":
        ds = tfds_examples(
            input_config.tfds_name,
            input_config.tfds_split,
            input_config.get("data_dir") or None,
            process_index,
            process_count,
            seed,
        )
        where = f"TFDS {input_config.tfds_name}:{input_config.tfds_split}"
    else:
        raise ValueError(f"unknown input.source {input_config.source!r}: 'tfds' or 'folder'")
    # Filter before repeat(): after it, a share without one usable image loops forever.
    crop_size = int(input_config.crop_size)
    ds = usable_examples(ds, crop_size)
    if not any(True for _ in ds.take(1)):  # stops at the first usable image
        raise ValueError(
            f"input: process {process_index} of {process_count} has no image of at least "
            f"{crop_size}x{crop_size} pixels in its share of {where}"
        )
    # Small folders: keep the decoded images in memory.
    if input_config.source == "folder" and input_config.get("cache", False):
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    ds = ds.shuffle(int(input_config.get("shuffle_buffer", 1000)), seed=seed)
    ds = crop_examples(ds, crop_size, seed)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def numpy_batches(ds) -> Iterator[dict]:
    """tf.data batches -> {"image": float32 ndarray, "caption": list[str]}."""
    for batch in ds.as_numpy_iterator():
        yield {
            "image": np.asarray(batch["image"], np.float32),
            "caption": [c.decode("utf-8") for c in batch["caption"]],
        }


# ----------------------------------------------------------------------------- text
def build_text_encoder(text_config, width: int | None = None):
    """config.text -> text encoder; `width` (config.model.text_dim) serves the 'random' one."""
    from tgic_jax.text_encoders import build_text_encoder as build

    if text_config.encoder == "random" and not text_config.get("width"):
        text_config = ml_collections.ConfigDict({**dict(text_config), "width": int(width or 0)})
    return build(text_config)


def tokenize_batches(batches: Iterator[dict], text_encoder) -> Iterator[dict]:
    """Adds "input_ids" and "attention_mask" [b, max_length] int32 (one tokenization).

    The frozen text tower (and, for the joint loss, CLIP's text projection) runs on these
    tokens inside the train step; the captions themselves stay on the host.
    """
    for batch in batches:
        tokens = text_encoder.tokenize(batch["caption"])
        yield {"image": batch["image"], "input_ids": tokens["input_ids"],
               "attention_mask": tokens["attention_mask"]}  # fmt: skip


# ----------------------------------------------------------------------------- pairs
# The authors' training set (datasets_MSCOCO.py): one sample per (image, caption) pair of
# the train2014 images whose shorter side is >= 256, i.e. ~5 pairs per image. An epoch is
# one pass over the pairs, so its length comes from the data (`list_pairs`).
MIN_SHORT_SIDE = 256


def list_coco_files(
    data_dir: str | Path, min_short_side: int = MIN_SHORT_SIDE
) -> list[tuple[str, str]]:
    """(image path, caption) pairs from the official train2014/ + captions_train2014.json.

    Images come from `images[].{id, file_name, width, height}` (sizes read from the file
    when the JSON lacks them), captions from `annotations[].{image_id, caption}`; images
    whose shorter side is below min_short_side are left out. Sorted by file name, then in
    the annotation file's order: the same list on every host and every run.
    """
    root = Path(data_dir)
    ann_path = root / "annotations" / "captions_train2014.json"
    if not ann_path.is_file():
        raise FileNotFoundError(f"{ann_path} not found (expected the official COCO layout)")
    ann = json.loads(ann_path.read_text())
    captions: dict[int, list[str]] = {}
    for a in ann["annotations"]:
        captions.setdefault(int(a["image_id"]), []).append(str(a["caption"]).strip())
    pairs = []
    for im in sorted(ann["images"], key=lambda im: im["file_name"]):
        path = root / "train2014" / im["file_name"]
        if "width" in im and "height" in im:
            short = min(int(im["width"]), int(im["height"]))
        else:
            short = min(_image_size(path))
        if short >= min_short_side:
            pairs += [(str(path), c) for c in captions.get(int(im["id"]), [])]
    if not pairs:
        raise FileNotFoundError(
            f"no (image, caption) pairs with short side >= {min_short_side} in {root}"
        )
    return pairs


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        return im.size


def list_folder_pairs(
    folder: str | Path, captions_path: str | Path | None = None, max_images: int = 0,
    min_short_side: int = MIN_SHORT_SIDE,
) -> list[tuple[str, str]]:  # fmt: skip
    """(image path, caption) pairs of a captioned folder, one per caption, short side filtered."""
    pairs = []
    for path, caps in list_folder(folder, captions_path, max_images):
        if min(_image_size(path)) >= min_short_side:
            pairs += [(str(path), c) for c in caps]
    if not pairs:
        raise FileNotFoundError(
            f"no (image, caption) pairs with short side >= {min_short_side} in {folder}"
        )
    return pairs


def list_pairs(input_config) -> list[tuple[str, str]]:
    """The training pairs of config.input (source 'coco_files', or 'folder' with pairs=True)."""
    min_side = int(input_config.get("min_short_side", MIN_SHORT_SIDE))
    if input_config.source == "coco_files":
        return list_coco_files(input_config.data_dir, min_side)
    return list_folder_pairs(
        input_config.folder, input_config.get("captions") or None,
        int(input_config.get("max_images", 0)), min_side,
    )  # fmt: skip


def uses_pairs(input_config) -> bool:
    """Whether config.input iterates (image, caption) pairs with an epoch from the data."""
    return input_config.source == "coco_files" or (
        input_config.source == "folder" and bool(input_config.get("pairs", False))
    )


def pair_order(num_pairs: int, global_batch: int, seed: int, start_step: int = 0):
    """Global pair indices in training order from start_step on: [global_batch] per step.

    Epoch e is the first steps_per_epoch * global_batch entries of a permutation drawn
    from (seed, e) (the remainder is dropped, as the authors' drop_last BatchSampler
    does), so the order depends only on the seed and resumes exactly at any step.
    """
    spe = max(1, num_pairs // global_batch)
    step = int(start_step)
    while True:
        epoch, offset = divmod(step, spe)
        perm = np.random.default_rng([int(seed), epoch]).permutation(num_pairs)
        for s in range(offset, spe):
            yield perm[s * global_batch : (s + 1) * global_batch]
        step = (epoch + 1) * spe


def pairs_dataset(
    input_config, pairs, global_batch: int, host_batch: int, seed: int, start_step: int,
    process_index: int = 0,
):  # fmt: skip
    """tf.data of this host's batches of random crops of `pairs`, in `pair_order`."""
    tf = import_tensorflow()
    paths = np.array([p for p, _ in pairs])
    caps = np.array([c for _, c in pairs])
    lo = process_index * host_batch  # this host's slice of every global batch
    crop_size = int(input_config.crop_size)

    def positions():
        step = int(start_step)
        for idx in pair_order(len(pairs), global_batch, seed, start_step):
            for j, i in enumerate(idx[lo : lo + host_batch]):
                # Position in the run: keys the crop, so a resumed run crops as before.
                yield paths[i], caps[i], np.int64(step * global_batch + lo + j)
            step += 1

    sig = (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int64))
    ds = tf.data.Dataset.from_generator(positions, output_signature=sig)

    def load(path, caption, position):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        key = tf.stack([tf.cast(seed, tf.int64), position])
        image = tf.image.stateless_random_crop(image, (crop_size, crop_size, 3), seed=key)
        return {"image": tf.cast(image, tf.float32) / 255.0, "caption": caption}

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)  # order kept (deterministic)
    return ds.batch(host_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
