"""Training input: random crops of captioned images, as host-local numpy batches.

Sources (config.input.source):
- ``folder``: a folder of images and a captions JSON in Kodak's format
  (``{"kodim01.png": "a caption", ...}``; a value may also be a list of captions, of which
  each example draws one at random: the rule of `tgic_jax.captions`). Each process reads
  its own disjoint share of the files.
- ``coco_files`` (or ``folder`` with ``pairs=True``): one example per (image, caption)
  pair, the epoch counted from the data (`list_pairs`, `pairs_dataset`), as the authors do.
- ``tfds``: TFDS ``coco_captions`` through tf.data; the only source that needs
  TensorFlow (the optional ``tfds`` extra), imported in that branch only.

The folder and pair sources are plain Python: Pillow decodes in a small thread pool
(its decoders release the GIL) a few batches ahead of the consumer, NumPy crops. Every
crop and caption pick is keyed by (seed, position in the run), never by thread timing,
so a run with the same seed sees the same batches, and a run resumed at step k (folder or
pairs) the batches an uninterrupted one saw from step k on.

Per example: images smaller than the crop are left out (not padded, not crashed on) and
named at start, one random crop_size x crop_size crop, one caption. An unreadable image is
named once, skipped (the next readable file of the list stands in, so batches keep their
size) and counted; it never stops a run. Batches are host-local dicts
``{"image": float32 [b, H, W, 3] in [0, 1], "caption": list[str]}``; `tokenize_batches`
replaces the captions by token ids and masks (the text tower runs in the train step).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tgic_jax import image_io
from tgic_jax.config import InputConfig, TextConfig


def _say(message: str) -> None:
    """One line of the input's own report (stdout, as the trainer's step lines)."""
    print(f"input: {message}", flush=True)


# ----------------------------------------------------------------------------- sources
def read_captions(captions_path: str | Path) -> dict[str, list[str]]:
    """Captions JSON -> {file name: [captions]}: `tgic_jax.captions.read_captions`, strict."""
    from tgic_jax.captions import read_captions as read

    return read(captions_path)


def folder_inventory(
    folder: str | Path, captions_path: str | Path | None = None
) -> tuple[list[tuple[Path, list[str]]], list[str], list[str]]:
    """-> (sorted captioned (image, captions), images without a caption, captions without image).

    A caption key names an image by file name or by stem (`tgic_jax.captions.lookup`).
    """
    from tgic_jax.captions import lookup

    folder = Path(folder)
    captions = read_captions(captions_path or folder / "captions.json")
    items, uncaptioned, used = [], [], set()
    for p in image_io.list_images(folder):
        caps = lookup(captions, p.name)
        if caps is None:
            uncaptioned.append(p.name)
            continue
        items.append((p, caps))
        used.update((p.name, p.stem))
    orphans = sorted(k for k in captions if k not in used)
    return items, uncaptioned, orphans


def list_folder(
    folder: str | Path,
    captions_path: str | Path | None = None,
    max_images: int = 0,
    report: bool = False,
) -> list[tuple[Path, list[str]]]:
    """Sorted (image path, captions) pairs of the captioned images present in `folder`.

    Images without a caption are left out: every training example needs one (evaluation's
    `sets.captioned_folder_set` keeps them, coded with the empty caption, and applies
    `max_images` before, not after, leaving them out).
    `report`: one line counts the images without a caption and the captions without an
    image (training says so at start rather than dropping them silently).
    """
    items, uncaptioned, orphans = folder_inventory(folder, captions_path)
    if report and (uncaptioned or orphans):
        _say(
            f"{folder}: {len(uncaptioned)} images without a caption left out"
            f"{_examples(uncaptioned)}, {len(orphans)} captions without an image"
            f"{_examples(orphans)}"
        )
    if not items:
        raise FileNotFoundError(
            f"no captioned images in {folder} ({captions_path or 'captions.json'}): "
            f"{len(uncaptioned)} images without a caption, {len(orphans)} captions "
            "without an image"
        )
    return items[:max_images] if max_images else items


def _examples(names: list[str], n: int = 3) -> str:
    if not names:
        return ""
    more = ", ..." if len(names) > n else ""
    return " (" + ", ".join(names[:n]) + more + ")"


# ----------------------------------------------------------------------------- images
def _header(path: str | Path) -> tuple[tuple[int, int], int]:
    """((width, height), frames) from the file's header (ImageError when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size, int(getattr(im, "n_frames", 1) or 1)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise image_io.ImageError(f"cannot read image ({_reason(e, path)})") from e


def _readable_sizes(paths: list[Path], report: bool = True) -> list[tuple[int, int] | None]:
    """Header sizes; None for a file Pillow cannot read, which is named (one summary line).

    An animation (GIF, APNG, WebP) trains on its first frame; `report` says so, once.
    """
    sizes, bad, animated = [], [], []
    for p in paths:
        try:
            size, frames = _header(p)
        except image_io.ImageError as e:
            sizes.append(None)
            bad.append(f"{p.name} ({str(e).removeprefix('cannot read image (')[:-1]})")
            continue
        sizes.append(size)
        if frames > 1:
            animated.append(f"{p.name} ({frames} frames)")
    if bad and report:
        _say(
            f"{len(bad)} of {len(paths)} images unreadable, skipped: "
            + "; ".join(bad[:10])
            + ("; ..." if len(bad) > 10 else "")
        )
    if animated and report:
        _say(
            f"{len(animated)} animated images: the first frame of each is used: "
            + "; ".join(animated[:10])
            + ("; ..." if len(animated) > 10 else "")
        )
    return sizes


def _reason(e: BaseException, path) -> str:
    """Pillow's message on one line, without the path it repeats."""
    line = (str(e) or type(e).__name__).splitlines()[0]
    return line.replace(f": '{path}'", "").replace(f" '{path}'", "")


# Modes Pillow turns into 8-bit RGB as tf.io.decode_image did; rarer ones (16-bit, float)
# go through `image_io.load_image`, which scales them from their full range.
_PLAIN_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr")


def decode_uint8(path: str | Path) -> np.ndarray:
    """The whole image as uint8 RGB [h, w, 3] (no EXIF turn, as tf.io.decode_image)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in _PLAIN_MODES:
                im.load()  # Pillow's decoders release the GIL: threads decode in parallel
                return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise image_io.ImageError(f"cannot read image ({_reason(e, path)})") from e
    return image_io.to_uint8(image_io.load_image(path)[0])


def random_crop(image: np.ndarray, crop_size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed crop_size x crop_size crop, float32 in [0, 1]."""
    h, w = image.shape[:2]
    y = int(rng.integers(0, h - crop_size + 1))
    x = int(rng.integers(0, w - crop_size + 1))
    return image[y : y + crop_size, x : x + crop_size].astype(np.float32) / np.float32(255.0)


class _Images:
    """The decoded images of a file list; an unusable file gives way to the next usable one.

    A file that fails to decode mid-run (truncated, corrupt, smaller than the crop) is
    named once and counted, and the next usable file of the list stands in for it: the
    batch keeps its size and, as the stand-in depends only on the files, every run and
    every resume picks the same one.
    """

    def __init__(self, paths: list[str], crop_size: int, cache: bool = False):
        self.paths = paths
        self.crop_size = crop_size
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._lock = threading.Lock()
        self.unusable: dict[str, str] = {}

    def get(self, index: int) -> tuple[np.ndarray, int]:
        """-> (uint8 image, index of the file used: `index` unless it was unusable)."""
        n = len(self.paths)
        for k in range(n):
            i = (index + k) % n
            path = self.paths[i]
            if path in self.unusable:
                continue
            image = self._cache.get(i) if self._cache is not None else None
            if image is None:
                try:
                    image = decode_uint8(path)
                except image_io.ImageError as e:
                    self._skip(path, str(e))
                    continue
                if min(image.shape[:2]) < self.crop_size:
                    self._skip(path, f"smaller than the {self.crop_size} pixel crop")
                    continue
                if self._cache is not None:
                    self._cache[i] = image
            return image, i
        raise RuntimeError(f"input: none of the {n} images of this host can be used")

    def _skip(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self.unusable:
                return
            self.unusable[path] = reason
            count = len(self.unusable)
        _say(f"skipped {path}: {reason} ({count} unusable images so far)")


def _batches(
    positions: Iterable[tuple[int, int]],
    load: Callable[[int, int], tuple[np.ndarray, str]],
    batch_size: int,
    workers: int,
) -> Iterator[dict]:
    """Batches of `load(index, position)`, in the order of `positions`, decoded ahead.

    A thread pool keeps about two batches of examples in flight while the consumer (the
    trainer's Prefetcher, itself batches ahead of the step) works; results are taken in
    submission order, so threads change the speed, never the batches.
    """
    ahead = max(2 * batch_size, 4 * workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tgic-input")
    pending: collections.deque = collections.deque()
    todo = iter(positions)
    try:
        images, captions = [], []
        while True:
            while len(pending) < ahead:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending.append(pool.submit(load, *nxt))
            if not pending:
                return  # a finite order ran out; the remainder is dropped
            image, caption = pending.popleft().result()
            images.append(image)
            captions.append(caption)
            if len(images) == batch_size:
                yield {"image": np.stack(images), "caption": captions}
                images, captions = [], []
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # at most `workers` decodes left


def _workers(input_config) -> int:
    return int(InputConfig.from_config(input_config).workers or min(32, os.cpu_count() or 1))


# ----------------------------------------------------------------------------- folder
def folder_items(
    input_config, process_index: int = 0, process_count: int = 1
) -> list[tuple[Path, list[str]]]:
    """This host's (image, captions) of a folder source, checked: what `make_dataset` trains on.

    Says at start (process 0) which images are left out: without a caption, unreadable,
    smaller than the crop. Raises (one line) when this host's share has no usable image.
    """
    input_config = InputConfig.from_config(input_config)
    crop_size = int(input_config.crop_size)
    report = process_index == 0
    items = list_folder(
        input_config.folder,
        input_config.captions or None,
        int(input_config.max_images or 0),
        report=report,
    )
    if len(items) >= process_count:
        items = items[process_index::process_count]  # disjoint shares when there are enough
    sizes = _readable_sizes([p for p, _ in items], report=report)
    small = [
        f"{p.name} ({s[0]} x {s[1]})"
        for (p, _), s in zip(items, sizes, strict=True)
        if s and min(s) < crop_size
    ]
    if small and report:
        _say(
            f"{len(small)} of {len(items)} images smaller than the {crop_size} x {crop_size} "
            "crop left out: " + "; ".join(small[:10]) + ("; ..." if len(small) > 10 else "")
        )
    items = [it for it, s in zip(items, sizes, strict=True) if s and min(s) >= crop_size]
    if not items:
        raise ValueError(
            f"input: process {process_index} of {process_count} has no image of at least "
            f"{crop_size}x{crop_size} pixels in its share of {input_config.folder}"
        )
    return items


def make_dataset(
    input_config,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    repeat: bool = True,
    start_step: int = 0,
    items: list | None = None,
) -> Iterator[dict]:
    """This host's batches of random crops of config.input's images (host-local numpy).

    The stream is a pure function of (seed, position): a run resumed at `start_step` sees
    the batches an uninterrupted run saw from that step on. Checked before the first batch
    (`folder_items`, or the given `items`): a host whose share holds no usable image fails
    here with one line, instead of looping forever.
    """
    input_config = InputConfig.from_config(input_config)
    seed = int(seed) + 1000 * process_index  # different crops on every host
    crop_size = int(input_config.crop_size)
    if input_config.source == "tfds":  # tf.data's shuffle: seeded by the start step instead
        return _tfds_batches(
            input_config, batch_size, seed + int(start_step), process_index, process_count, repeat
        )
    if input_config.source != "folder":
        raise ValueError(f"unknown input.source {input_config.source!r}: 'tfds' or 'folder'")
    if items is None:
        items = folder_items(input_config, process_index, process_count)
    images = _Images([str(p) for p, _ in items], crop_size, bool(input_config.cache))
    first = int(start_step) * int(batch_size)

    def positions() -> Iterator[tuple[int, int]]:
        # Position n of the stream is entry n % N of the permutation of epoch n // N.
        epoch, k = divmod(first, len(items))
        while True:
            perm = np.random.default_rng([seed, epoch]).permutation(len(items))
            for i in perm[k:]:
                yield int(i), epoch * len(items) + k
                k += 1
            epoch, k = epoch + 1, 0
            if not repeat:
                return

    def load(index: int, position: int) -> tuple[np.ndarray, str]:
        rng = np.random.default_rng([seed, position])  # the same crop on every run
        image, used = images.get(index)
        caps = items[used][1]
        return random_crop(image, crop_size, rng), caps[int(rng.integers(len(caps)))]

    return _batches(positions(), load, batch_size, _workers(input_config))


# ----------------------------------------------------------------------------- tfds
def tfds_examples(
    name: str = "coco_captions",
    split: str = "train",
    data_dir: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
):
    """tf.data of {"image", "captions"} from TFDS, this process's even split."""
    from tgic_jax.tf_import import import_tensorflow

    tf = import_tensorflow()  # the `tfds` extra; no other source imports TensorFlow
    import tensorflow_datasets as tfds

    part = tfds.even_splits(split, n=process_count)[process_index]
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    ds = tfds.load(
        name, split=part, data_dir=data_dir or None, shuffle_files=True, read_config=read_config
    )

    def select(ex):
        return {"image": ex["image"], "captions": ex["captions"]["text"]}

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_batches(input_config, batch_size, seed, process_index, process_count, repeat):
    """TFDS through tf.data (on the CPU), as host-local numpy batches."""
    input_config = InputConfig.from_config(input_config)
    from tgic_jax.tf_import import import_tensorflow

    tf = import_tensorflow()
    crop_size = int(input_config.crop_size)
    ds = tfds_examples(
        input_config.tfds_name,
        input_config.tfds_split,
        input_config.data_dir or None,
        process_index,
        process_count,
        seed,
    )

    def big_enough(ex):
        shape = tf.shape(ex["image"])
        return tf.logical_and(shape[0] >= crop_size, shape[1] >= crop_size)

    # Filter before repeat(): after it, a share without one usable image loops forever.
    ds = ds.filter(big_enough)
    if not any(True for _ in ds.take(1)):  # stops at the first usable image
        raise ValueError(
            f"input: process {process_index} of {process_count} has no image of at least "
            f"{crop_size}x{crop_size} pixels in its share of TFDS "
            f"{input_config.tfds_name}:{input_config.tfds_split}"
        )
    if repeat:
        ds = ds.repeat()
    ds = ds.shuffle(int(input_config.shuffle_buffer), seed=seed)

    def crop(i, ex):
        # Stateless ops keyed by the element's position: the same crops and captions on
        # every run with this seed, however the parallel map schedules its calls.
        key = tf.stack([tf.cast(seed, tf.int64), i])
        image = tf.image.stateless_random_crop(ex["image"], (crop_size, crop_size, 3), seed=key)
        n = tf.shape(ex["captions"])[0]
        pick = tf.random.stateless_uniform((), key + [0, 1 << 40], 0, n, dtype=tf.int32)
        return {"image": tf.cast(image, tf.float32) / 255.0, "caption": ex["captions"][pick]}

    ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def numpy_batches():
        for batch in ds.as_numpy_iterator():
            yield {
                "image": np.asarray(batch["image"], np.float32),
                "caption": [c.decode("utf-8") for c in batch["caption"]],
            }

    return numpy_batches()


# ----------------------------------------------------------------------------- text
def build_text_encoder(text_config, width: int | None = None):
    """config.text -> text encoder; `width` (config.model.text_dim) serves the 'random' one.

    A cached tower whose files fail their pinned sha256 stops the run in one line (RunError).
    """
    from tgic_jax.files import IntegrityError
    from tgic_jax.model.text_encoders import build_text_encoder as build
    from tgic_jax.train.errors import RunError

    text_config = TextConfig.from_config(text_config)
    if text_config.encoder == "random" and not text_config.width:
        text_config = dataclasses.replace(text_config, width=int(width or 0))
    try:
        return build(text_config)
    except IntegrityError as err:
        raise RunError(str(err)) from err


def tokenize_batches(batches: Iterator[dict], text_encoder) -> Iterator[dict]:
    """Adds "input_ids" and "attention_mask" [b, max_length] int32 (one tokenization).

    The frozen text tower (and, for the joint loss, CLIP's text projection) runs on these
    tokens inside the train step; the captions themselves stay on the host.
    """
    for batch in batches:
        tokens = text_encoder.tokenize(batch["caption"])
        yield {
            "image": batch["image"],
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }


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
    images = sorted(ann["images"], key=lambda im: im["file_name"])
    ids = {int(im["id"]) for im in images}
    uncaptioned = sum(int(im["id"]) not in captions for im in images)
    orphans = sum(len(c) for i, c in captions.items() if i not in ids)
    if uncaptioned or orphans:
        _say(
            f"{ann_path}: {uncaptioned} images without a caption left out, {orphans} "
            "captions of an image not listed"
        )
    paths = [root / "train2014" / im["file_name"] for im in images]
    # Sizes from the JSON; read from the file only when it lacks them (unreadable: skipped).
    unsized = [
        p for im, p in zip(images, paths, strict=True) if "width" not in im or "height" not in im
    ]
    read = dict(zip(unsized, _readable_sizes(unsized), strict=True))
    pairs, small = [], 0
    for im, path in zip(images, paths, strict=True):
        size = (int(im["width"]), int(im["height"])) if path not in read else read[path]
        if size is not None and min(size) >= min_short_side:
            pairs += [(str(path), c) for c in captions.get(int(im["id"]), [])]
        small += size is not None and min(size) < min_short_side
    if small:
        _say(
            f"{small} of {len(images)} images with a short side below {min_short_side} "
            "left out (input.min_short_side)"
        )
    if not pairs:
        raise FileNotFoundError(
            f"no (image, caption) pairs with short side >= {min_short_side} in {root}"
        )
    return pairs


def list_folder_pairs(
    folder: str | Path,
    captions_path: str | Path | None = None,
    max_images: int = 0,
    min_short_side: int = MIN_SHORT_SIDE,
) -> list[tuple[str, str]]:
    """(image path, caption) pairs of a captioned folder, one per caption, short side filtered."""
    items = list_folder(folder, captions_path, max_images, report=True)
    sizes = _readable_sizes([p for p, _ in items])
    pairs = []
    small = [
        f"{path.name} ({size[0]} x {size[1]})"
        for (path, _), size in zip(items, sizes, strict=True)
        if size is not None and min(size) < min_short_side
    ]
    for (path, caps), size in zip(items, sizes, strict=True):
        if size is not None and min(size) >= min_short_side:
            pairs += [(str(path), c) for c in caps]
    if small:
        _say(
            f"{len(small)} of {len(items)} images with a short side below {min_short_side} "
            "left out (input.min_short_side): "
            + "; ".join(small[:10])
            + ("; ..." if len(small) > 10 else "")
        )
    if not pairs:
        raise FileNotFoundError(
            f"no (image, caption) pairs with short side >= {min_short_side} in {folder}"
        )
    return pairs


def list_pairs(input_config) -> list[tuple[str, str]]:
    """The training pairs of config.input (source 'coco_files', or 'folder' with pairs=True)."""
    input_config = InputConfig.from_config(input_config)
    min_side = int(input_config.min_short_side)
    if input_config.source == "coco_files":
        return list_coco_files(input_config.data_dir, min_side)
    return list_folder_pairs(
        input_config.folder,
        input_config.captions or None,
        int(input_config.max_images or 0),
        min_side,
    )


def uses_pairs(input_config) -> bool:
    """Whether config.input iterates (image, caption) pairs with an epoch from the data."""
    input_config = InputConfig.from_config(input_config)
    return input_config.source == "coco_files" or (
        input_config.source == "folder" and bool(input_config.pairs)
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
    input_config,
    pairs,
    global_batch: int,
    host_batch: int,
    seed: int,
    start_step: int,
    process_index: int = 0,
) -> Iterator[dict]:
    """This host's batches of random crops of `pairs`, in `pair_order` from start_step on.

    Host h takes entries [h * host_batch, (h + 1) * host_batch) of every global batch, so
    the hosts' slices are disjoint; each crop is keyed by the pair's position in the run,
    so a run resumed at any step crops as the uninterrupted one did.
    """
    input_config = InputConfig.from_config(input_config)
    crop_size = int(input_config.crop_size)
    lo = process_index * host_batch  # this host's slice of every global batch
    images = _Images([p for p, _ in pairs], crop_size, bool(input_config.cache))

    def positions() -> Iterator[tuple[int, int]]:
        step = int(start_step)
        for idx in pair_order(len(pairs), global_batch, seed, start_step):
            for j, i in enumerate(idx[lo : lo + host_batch]):
                yield int(i), step * global_batch + lo + j
            step += 1

    def load(index: int, position: int) -> tuple[np.ndarray, str]:
        image, used = images.get(index)
        return random_crop(image, crop_size, np.random.default_rng([seed, position])), pairs[used][
            1
        ]

    return _batches(positions(), load, host_batch, _workers(input_config))
