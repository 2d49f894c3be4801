"""Inference checkpoints, through orbax: the trained parameters, config and coding tables.

An inference checkpoint is a directory:
    config.json   the model sizes and the text-encoder config (plain JSON)
    state/        orbax PyTree checkpoint of {"params": ..., "tables": ...} and, in those
                  that `tgic export` and `tgic convert` write, "integer_entropy" (the
                  integer entropy path, `integer_entropy_of`: files that decode bit for bit
                  on any device)
Both are written into a temporary sibling directory and renamed into place, so a reader
never sees half a checkpoint. `CHECKPOINT_ENTRIES` names what a checkpoint consists of: a
folder's other files (a user's notes, results) are carried into the new checkpoint when
one is replaced (`tgic export/convert --force`), never deleted.

Every path here goes through `as_path` (etils.epath): `gs://bucket/run` stays a bucket URL
(`pathlib.Path(...).absolute()` made it `<cwd>/gs:/bucket/run`, a local folder on each host).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import uuid

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from tgic_jax import image_io
from tgic_jax.coding import integer_path
from tgic_jax.coding.tables import build_tables
from tgic_jax.files import replace_dir
from tgic_jax.model.taco import TACO, ModelConfig

FORMAT = "tgic_jax-inference-v1"
# Every entry an inference checkpoint consists of (what `save_inference` writes and, when
# it replaces a checkpoint, replaces): the one list `tgic export/convert --force` go by.
CHECKPOINT_ENTRIES = ("config.json", "state")
_FILE_URL = "file://"
# Calibration of the integer entropy path: centre crops of four Kodak images (the
# checkout's data/kodak; synthetic textures without it), ~2 s each for the paper-size
# model on a CPU. Random text states: the caption moves y far less than the image does,
# and the ranges get a 1.5x margin (`integer_path`).
_KODAK = os.path.join(os.path.dirname(__file__), "..", "..", "data", "kodak")
CALIBRATION_IMAGES = ("kodim01.png", "kodim05.png", "kodim13.png", "kodim20.png")
CALIBRATION_CROP = 256


def as_path(path: str | os.PathLike) -> epath.Path:
    """A local path made absolute, or a URL (gs://, s3://...) kept as a URL.

    `file:///abs/path` is read as the local path (etils.epath has no `file://` scheme).
    """
    text = os.fspath(path)
    if text.startswith(_FILE_URL):
        text = text[len(_FILE_URL) :]
    if "://" in text:
        return epath.Path(text)
    return epath.Path(os.path.abspath(text))


def to_numpy(tree):
    """The tree with every leaf a host numpy array (what orbax and npz writers take)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def _one_process_checkpointer() -> ocp.Checkpointer:
    """An orbax checkpointer that this process uses alone, with no barrier across hosts.

    Inference checkpoints hold host arrays written by one process: the export, or process 0
    keeping a best checkpoint while the other hosts wait at a coordination barrier. orbax's
    default barrier is a device collective that those hosts never join, so it would hang.
    """
    me = jax.process_index()
    options = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(
        ocp.PyTreeCheckpointHandler(multiprocessing_options=options),
        multiprocessing_options=options,
    )


def own_entries(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(entries of `CHECKPOINT_ENTRIES` present in the folder, its other entries), sorted."""
    path = as_path(path)
    if not path.is_dir():
        return [], []
    names = sorted(p.name for p in path.iterdir())
    return [n for n in names if n in CHECKPOINT_ENTRIES], [
        n for n in names if n not in CHECKPOINT_ENTRIES
    ]


def calibration_images(count: int = len(CALIBRATION_IMAGES)) -> list[np.ndarray]:
    """The images the integer entropy path is calibrated on (float32 [256, 256, 3])."""
    return list(_calibration_images()[:count])


@functools.cache
def _calibration_images() -> tuple[np.ndarray, ...]:
    """Read (or made) once per process: every export and per-epoch best calibrates on them."""
    images = []
    for k, name in enumerate(CALIBRATION_IMAGES):
        file = os.path.join(_KODAK, name)
        if os.path.isfile(file):
            image = image_io.load_image(file)[0]
            h, w = image.shape[:2]
            top, left = (h - CALIBRATION_CROP) // 2, (w - CALIBRATION_CROP) // 2
            images.append(
                image[top : top + CALIBRATION_CROP, left : left + CALIBRATION_CROP].copy()
            )
        else:  # an installed package without the checkout: smooth textures with noise
            rng = np.random.default_rng(k)
            yy, xx = np.mgrid[0:CALIBRATION_CROP, 0:CALIBRATION_CROP] / CALIBRATION_CROP
            base = np.stack([np.sin((6 + k) * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
            noise = 0.1 * rng.normal(size=base.shape)
            images.append(np.clip(0.5 + 0.35 * base + noise, 0, 1).astype(np.float32))
    for image in images:
        image.setflags(write=False)  # shared by every caller
    return tuple(images)


def integer_entropy_of(model: TACO, params, tables: dict | None = None, images=None) -> dict:
    """The integer entropy path of float `params`, calibrated on `images` (default: Kodak).

    What `tgic export` and `tgic convert` store as `variables["integer_entropy"]`.
    """
    params = to_numpy(params)
    tables = build_tables(params) if tables is None else tables
    images = calibration_images() if images is None else list(images)
    rng = np.random.default_rng(0)
    texts = [rng.normal(size=(38, model.config.text_dim)).astype(np.float32) for _ in images]
    stats = integer_path.calibrate(model, params, tables["z_medians"], images, texts)
    return integer_path.integerize(model.config, params, tables["z_medians"], stats)


def save_inference(
    path: str | os.PathLike,
    model_config: ModelConfig,
    params,
    text_config: dict | None = None,
    tables: dict | None = None,
    extra: dict | None = None,
    integer_entropy: dict | bool = True,
) -> epath.Path:
    """Writes an inference checkpoint atomically; tables default to `build_tables(params)`.

    Replacing an existing folder replaces only `CHECKPOINT_ENTRIES`: its other entries are
    moved into the new checkpoint before it takes the folder's name.

    integer_entropy: the integer entropy path to store; True (the default) calibrates it
    here (`integer_entropy_of`, seconds), so that every checkpoint's files decode bit for
    bit on any device; False keeps the checkpoint float-only (its files: version 4).
    """
    path = as_path(path)
    params = to_numpy(params)
    if tables is None:
        tables = build_tables(params)
    if integer_entropy is True:
        integer_entropy = integer_entropy_of(TACO(model_config), params, tables)
    state = {"params": params, "tables": to_numpy(tables)}
    if integer_entropy is not False:
        state["integer_entropy"] = to_numpy(integer_entropy)
    meta = {
        "format": FORMAT,
        "model": model_config.to_dict(),
        "text": dict(text_config or {}),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _one_process_checkpointer().save(tmp / "state", state)
        (tmp / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        _replace_keeping_others(tmp, path)
    finally:
        tmp.rmtree(missing_ok=True)
    return path


def _replace_keeping_others(tmp: epath.Path, path: epath.Path) -> None:
    """`replace_dir(tmp, path)`, the entries of `path` that are not ours moved along first."""
    others = own_entries(path)[1]
    moved = []
    try:
        for name in others:
            (path / name).rename(tmp / name)
            moved.append(name)
        replace_dir(tmp, path)
    except BaseException:
        for name in moved:  # the old folder is still in place: give each entry back
            if (tmp / name).exists() and path.is_dir():
                (tmp / name).rename(path / name)
        raise


def read_inference_config(path: str | os.PathLike) -> dict:
    """The checkpoint's config.json as a dict (clear error when it is not a checkpoint)."""
    cfg_file = as_path(path) / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a tgic_jax inference checkpoint (no config.json)")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def load_inference(path: str | os.PathLike):
    """-> (model, variables {"params", "tables"[, "integer_entropy"]}, config: .model, .text)."""
    meta = read_inference_config(path)
    model_config = ModelConfig(**meta["model"])
    state = _one_process_checkpointer().restore(as_path(path) / "state")
    state = jax.tree_util.tree_map(np.asarray, state)
    config = ml_collections.ConfigDict(
        {
            "model": model_config.to_dict(),
            "text": meta.get("text", {}),
            "extra": {k: v for k, v in meta.items() if k not in ("model", "text")},
        }
    )
    return TACO(model_config), state, config


def load_caption_coder(
    path: str | os.PathLike,
    text_encoder=None,
    label: str = "",
    program_dir: str | os.PathLike | None = None,
):
    """The `CaptionCoder` of an inference checkpoint (its text encoder built when needed).

    Its `config` is the checkpoint's (`load_inference`); `label` defaults to the folder name.
    """
    from tgic_jax.coding.caption_coder import CaptionCoder

    model, variables, config = load_inference(path)
    label = label or pathlib.Path(path).name
    coder = CaptionCoder(model, variables, text_encoder, config.text.to_dict(), program_dir, label)
    coder.config = config
    return coder
