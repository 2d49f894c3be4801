"""Evaluation image sets with their captions: a folder + captions JSON, Kodak, TFDS CLIC/COCO.

Every set is a list of `EvalItem`s: a name, where the pixels come from (a file or an
in-memory array from TFDS), the candidate captions, and a note that says where the
caption came from. An image without a caption is coded with the empty caption "" and the
note says so; nothing is silently skipped.

Captions JSON: read by `tgic_jax.captions` (the reader `tgic compress` and training use
too): an object mapping an image's file name (or its stem) to a caption or a list of
captions, e.g. ``{"kodim01.png": "a brick building with red doors and windows"}`` (the
format of the TACO authors' ``materials/kodak_ofa.json``), or a list of objects
``[{"image": "a.png", "caption": "..."}]`` (or "file_name" / "captions").

Which caption is used when an image has several (MS-COCO has ~5):
- ``first`` (default): the first listed caption (``--caption-index K`` picks number K,
  0-based, for folder sets). Honest: needs nothing but the image's metadata.
- ``best_lpips`` (oracle): code the image once per caption and keep the one with the
  lowest LPIPS to the original. The TACO authors' COCO script meant to do this; it needs
  the original image at the encoder to choose, so its numbers are an upper bound and are
  labelled "oracle" in every report.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tgic_jax import captions as captions_lib
from tgic_jax import image_io
from tgic_jax.captions import CaptionsError

CAPTION_MODES = ("first", "best_lpips")

NOTE_FROM_JSON = "from captions JSON"
NOTE_MISSING = "missing: empty caption used"


@dataclasses.dataclass
class EvalItem:
    """One image to evaluate: pixels from `path` or `array` (uint8 HWC), candidate captions."""

    name: str
    path: str | None = None
    array: np.ndarray | None = None
    captions: tuple[str, ...] = ()
    caption_note: str = NOTE_MISSING

    @property
    def caption(self) -> str:
        """The default (first) caption, "" when there is none."""
        return self.captions[0] if self.captions else ""


@dataclasses.dataclass
class EvalSet:
    """A named list of items plus how captions were chosen and any set-level problems."""

    name: str
    items: list[EvalItem]
    caption_mode: str = "first"
    caption_source: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)  # warnings
    errors: list[str] = dataclasses.field(default_factory=list)  # e.g. bad captions JSON

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def load_captions(path: str | os.PathLike) -> tuple[dict[str, list[str]], list[str]]:
    """Reads a captions JSON -> ({image name: [captions]}, per-entry problems).

    The one reader of `tgic_jax.captions`: raises CaptionsError naming the file when it is
    unreadable or not an object / list of objects; a malformed entry is reported in the
    returned problems (file and entry named) and that image gets no caption.
    """
    return captions_lib.read_captions_and_problems(path)


def folder_set(
    folder: str | os.PathLike,
    captions_json: str | os.PathLike | None = None,
    max_images: int | None = None,
    name: str | None = None,
    caption_index: int = 0,
) -> EvalSet:
    """All images of `folder` (sorted by name) with captions from `captions_json`.

    An image's caption number `caption_index` is put first (the one "first" mode codes);
    an image with fewer captions is recorded in `errors` and gets none.
    """
    folder = Path(folder)
    files = image_io.list_images(folder)  # as training's input_pipeline.list_folder
    if max_images:
        files = files[:max_images]
    problems: list[str] = []
    errors: list[str] = []
    captions: dict[str, list[str]] = {}
    fallback_note = NOTE_MISSING
    if captions_json:
        try:
            captions, errors = load_captions(captions_json)
        except CaptionsError as err:
            errors.append(str(err))
            fallback_note = "captions JSON unreadable: empty caption used"
    else:
        fallback_note = "no captions JSON given: empty caption used"
    items = []
    for p in files:
        found = captions_lib.lookup(captions, p.name)
        if found is not None and caption_index:
            try:
                chosen = captions_lib.pick(found, caption_index, p.name, captions_json)
            except CaptionsError as err:
                errors.append(str(err))
                found = None
            else:
                found = [chosen] + [c for i, c in enumerate(found) if i != caption_index]
        if found is None:
            items.append(EvalItem(p.name, path=str(p), caption_note=fallback_note))
        else:
            items.append(
                EvalItem(p.name, path=str(p), captions=tuple(found), caption_note=NOTE_FROM_JSON)
            )
    known = {p.name for p in files} | {p.stem for p in files}
    unused = sorted(k for k in captions if k not in known)
    if unused and not max_images:
        problems.append(f"{len(unused)} captions name no image in {folder}: {unused[:5]}")
    source = str(captions_json) if captions_json else "none (empty captions)"
    return EvalSet(
        name or folder.name, items, caption_source=source, problems=problems, errors=errors
    )


def captioned_folder_set(
    folder: str | os.PathLike, captions: str | os.PathLike = "", max_images: int = 0
) -> EvalSet:
    """A configured evaluation folder (config.eval): the one rule of per-epoch selection
    and eval.py, so one config lists one set.

    `folder_set`'s rule: every image of `folder` in name order, the first `max_images` of
    them (0: all), an image without a caption coded with "" and reported. `captions` ""
    reads FOLDER/captions.json, as config.input reads its folder.
    """
    captions = captions or Path(folder) / "captions.json"
    return folder_set(folder, captions, int(max_images or 0) or None)


def kodak_set(root: str | os.PathLike, max_images: int | None = None) -> EvalSet:
    """Kodak's 24 images with the OFA captions the TACO authors used (a clone's data/kodak)."""
    root = Path(root)
    if not (root / "captions.json").is_file():
        raise FileNotFoundError(
            f"Kodak not found at {root} (expected kodim01.png ... and captions.json); pass "
            "--images DIR --captions JSON instead"
        )
    return folder_set(root, root / "captions.json", max_images, name="kodak")


def _tfds_items(name: str, split: str, data_dir: str | None, max_images: int | None):
    import tensorflow_datasets as tfds

    from tgic_jax.tf_import import import_tensorflow

    import_tensorflow()  # GPUs hidden before TFDS starts TF
    ds = tfds.load(name, split=split, data_dir=data_dir or None, shuffle_files=False)
    if max_images:
        ds = ds.take(max_images)
    return tfds.as_numpy(ds)


def _decode_text(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.ravel(values)]


def tfds_set(
    dataset: str,
    split: str | None = None,
    data_dir: str | None = None,
    max_images: int | None = None,
    caption_mode: str = "first",
) -> EvalSet:
    """CLIC ('clic', validation split, no captions) or MS-COCO ('coco': coco_captions/val).

    COCO's 'val' split of TFDS coco_captions is the 5,000-image Karpathy validation split
    of COCO 2014; each image carries ~5 human captions (see `caption_mode`).
    """
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"caption_mode must be one of {CAPTION_MODES}, got {caption_mode!r}")
    items = []
    if dataset == "clic":
        split = split or "validation"
        for i, ex in enumerate(_tfds_items("clic", split, data_dir, max_images)):
            items.append(
                EvalItem(
                    f"clic_{split}_{i:04d}.png",
                    array=ex["image"],
                    caption_note="CLIC has no captions: empty caption used",
                )
            )
        return EvalSet(f"clic/{split}", items, caption_source="none (CLIC has no captions)")
    if dataset == "coco":
        split = split or "val"
        for i, ex in enumerate(_tfds_items("coco_captions", split, data_dir, max_images)):
            fname = ex.get("image/filename", b"")
            fname = fname.decode() if isinstance(fname, bytes) and fname else f"coco_{i:05d}.jpg"
            texts = tuple(_decode_text(ex["captions"]["text"])) if "captions" in ex else ()
            note = (
                (
                    f"COCO caption 1 of {len(texts)}"
                    if caption_mode == "first"
                    else f"best of {len(texts)} COCO captions by LPIPS (oracle)"
                )
                if texts
                else NOTE_MISSING
            )
            items.append(
                EvalItem(Path(fname).name, array=ex["image"], captions=texts, caption_note=note)
            )
        source = (
            "coco_captions first caption"
            if caption_mode == "first"
            else "coco_captions best-of-5 by LPIPS (ORACLE: chooses with the original image)"
        )
        return EvalSet(f"coco/{split}", items, caption_mode=caption_mode, caption_source=source)
    raise ValueError(f"unknown TFDS evaluation set {dataset!r}: expected 'clic' or 'coco'")
