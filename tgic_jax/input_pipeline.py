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
``{"image": float32 [b, H, W, 3] in [0, 1], "caption": list[str]}``; `encode_batches`
adds the text states (and CLIP text embeddings for the joint loss) on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import ml_collections
import numpy as np

_SEP = "\x1f"  # joins a file's captions into one tf.string (never in a caption)


def _tf():
    import tensorflow as tf  # noqa: PLC0415 - TF only where the pipeline is built

    tf.config.set_visible_devices([], "GPU")
    return tf


# ----------------------------------------------------------------------------- sources
def read_captions(captions_path: str | Path) -> dict[str, list[str]]:
    """Captions JSON -> {file name: [captions]}: `tgic_jax.captions.read_captions`, strict."""
    from tgic_jax.captions import read_captions as read  # noqa: PLC0415

    return read(captions_path)


def list_folder(
    folder: str | Path, captions_path: str | Path | None = None, max_images: int = 0
) -> list[tuple[Path, list[str]]]:
    """Sorted (image path, captions) pairs of the captioned images present in `folder`."""
    folder = Path(folder)
    captions = read_captions(captions_path or folder / "captions.json")
    items = [(folder / name, caps) for name, caps in sorted(captions.items())]
    items = [(p, caps) for p, caps in items if p.is_file()]
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
    tf = _tf()
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
    tf = _tf()
    import tensorflow_datasets as tfds  # noqa: PLC0415

    part = tfds.even_splits(split, n=process_count)[process_index]
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    ds = tfds.load(
        name, split=part, data_dir=data_dir or None, shuffle_files=True, read_config=read_config
    )

    def select(ex):
        return {"image": ex["image"], "captions": ex["captions"]["text"]}

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- crops
def crop_examples(ds, crop_size: int, seed: int):
    """Drops images smaller than the crop; random crop in [0, 1] and one random caption."""
    tf = _tf()

    def big_enough(ex):
        shape = tf.shape(ex["image"])
        return tf.logical_and(shape[0] >= crop_size, shape[1] >= crop_size)

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

    return ds.filter(big_enough).enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(
    input_config,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
):
    """The batched, shuffled, repeated tf.data pipeline for config.input (host-local)."""
    tf = _tf()
    seed = int(seed) + 1000 * process_index  # different crops on every host
    if input_config.source == "folder":
        ds = folder_examples(
            input_config.folder,
            input_config.get("captions") or None,
            int(input_config.get("max_images", 0)),
            process_index,
            process_count,
        )
        # Small folders: keep the encoded files in memory, decode per epoch.
        ds = ds.cache() if input_config.get("cache", False) else ds
    elif input_config.source == "tfds":
        ds = tfds_examples(
            input_config.tfds_name,
            input_config.tfds_split,
            input_config.get("data_dir") or None,
            process_index,
            process_count,
            seed,
        )
    else:
        raise ValueError(f"unknown input.source {input_config.source!r}: 'tfds' or 'folder'")
    if repeat:
        ds = ds.repeat()
    ds = ds.shuffle(int(input_config.get("shuffle_buffer", 1000)), seed=seed)
    ds = crop_examples(ds, int(input_config.crop_size), seed)
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
    from tgic_jax.text_encoders import build_text_encoder as build  # noqa: PLC0415

    if text_config.encoder == "random" and not text_config.get("width"):
        text_config = ml_collections.ConfigDict({**dict(text_config), "width": int(width or 0)})
    return build(text_config)


def encode_batches(
    batches: Iterator[dict],
    text_encoder,
    clip_text_fn: Callable[[list[str]], np.ndarray] | None = None,
) -> Iterator[dict]:
    """Adds "text" (token states) and, with clip_text_fn, "clip_text" to each host batch."""
    for batch in batches:
        out = {"image": batch["image"], "text": text_encoder.encode(batch["caption"])[0]}
        if clip_text_fn is not None:
            out["clip_text"] = np.asarray(clip_text_fn(batch["caption"]), np.float32)
        yield out
