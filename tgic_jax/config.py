"""The typed config of a training run: one frozen dataclass per section of configs/base.py.

`RunConfig.from_config(config)` turns the ConfigDict that train.py / eval.py load into these
dataclasses at start-up; each module then takes its own section (`optim.make_optimizer`
takes an `OptimConfig`, ...). A key that no section declares is an error in one line that
names the closest known key, wherever it is read. The defaults here are configs/base.py's
(tests/test_configs.py holds them equal); `None` means "nothing set".

The model's section is `tgic_jax.model.taco.ModelConfig` (the model's own interface).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

# Keys renamed since older runs wrote their config.json: old dotted name -> new one.
RENAMED = {"optim.train_images": "optim.epoch_pairs"}
# Keys whose "nothing set" older configs wrote as -1 (now None).
MINUS_ONE_IS_NONE = ("total_steps", "mesh.data")
# A workdir's config.json holds, beside the config, a record of what the run ran on (its
# device count) under this name: not a config key.
RUN_RECORD = "run"


class ConfigKeyError(ValueError):
    """A key no section declares (the message is one line naming the closest known key)."""


def closest(key: str, known) -> str:
    """`key` is not a config key; did you mean ...? (one line)."""
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    hint = f"; did you mean {match[0]!r}?" if match else f" (known: {', '.join(sorted(known))})"
    return f"unknown config key {key!r}{hint}"


def _plain(value):
    """A ConfigDict / FieldReference / list value as the dataclass holds it."""
    if hasattr(value, "get") and hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return tuple(value)
    return value


def _items(section) -> dict[str, Any]:
    if section is None:
        return {}
    if dataclasses.is_dataclass(section):
        return dataclasses.asdict(section)
    if hasattr(section, "to_dict"):
        return section.to_dict()
    if isinstance(section, Mapping):
        return dict(section)
    raise TypeError(f"a config section must be a mapping, not {type(section).__name__}")


class Section:
    """from_config for the dataclass sections below."""

    name: ClassVar[str] = ""

    @classmethod
    def from_config(cls, section):
        """This section from a ConfigDict / dict / the dataclass itself; unknown key: error."""
        if isinstance(section, cls):
            return section
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in upgrade({cls.name: _items(section)})[cls.name].items():
            if key not in fields:
                known = [f"{cls.name}.{f}" for f in fields]
                raise ConfigKeyError(closest(f"{cls.name}.{key}", known))
            values[key] = _plain(value)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class TextConfig(Section):
    """config.text: the frozen text encoder of the conditioning text."""

    name: ClassVar[str] = "text"
    encoder: str = "clip"  # 'clip', 'minilm' or 'random' (tests)
    path: str = "openai/clip-vit-base-patch32"  # weights; "" the encoder's default
    max_length: int = 38  # tokens
    width: int | None = None  # 'random' only: the states' width


@dataclasses.dataclass(frozen=True)
class LossConfig(Section):
    """config.loss: rate + lmbda * MSE + k_p * LPIPS + k_j * joint image-text term."""

    name: ClassVar[str] = "loss"
    lmbda: float = 0.0004
    k_p: float = 3.5
    k_j: float = 0.0025
    weights_confirmed: bool = True
    lpips_input_range: str = "minus_one_one"
    lpips_float64: bool = True
    clip_path: str = "openai/clip-vit-base-patch32"
    clip_embed_weight: float = 40.0
    clip_logit_scale_log: float = 2.6592
    joint_group_size: int = 8  # images per joint-term group
    clip_resize_method: str = "linear"


@dataclasses.dataclass(frozen=True)
class OptimConfig(Section):
    """config.optim: Adam on the main and aux parameters, the epoch and its decay."""

    name: ClassVar[str] = "optim"
    learning_rate: float = 1e-4
    aux_learning_rate: float = 1e-3
    grad_clip_norm: float = 1.0
    epochs: int = 50
    decay_epochs: tuple[int, ...] = (45, 48)
    decay_factor: float = 0.1
    epoch_pairs: int = 414_113  # (image, caption) pairs in an epoch


@dataclasses.dataclass(frozen=True)
class InputConfig(Section):
    """config.input: the training data."""

    name: ClassVar[str] = "input"
    source: str = "coco_files"
    tfds_name: str = "coco_captions"
    tfds_split: str = "train"
    data_dir: str = ""
    folder: str = ""
    captions: str = ""
    pairs: bool = False
    max_images: int | None = None
    min_short_side: int = 256  # pixels
    cache: bool = False
    crop_size: int = 256  # pixels
    batch_size_per_device: int = 8
    shuffle_buffer: int = 2_000
    workers: int | None = None  # None: min(32, CPUs)
    prefetch_batches: int = 2


@dataclasses.dataclass(frozen=True)
class CkptConfig(Section):
    """config.ckpt: how often checkpoints are written and how many are kept."""

    name: ClassVar[str] = "ckpt"
    every_steps: int = 5_000
    keep: int = 3
    use_async: bool = True


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
    """config.eval: the images of per-epoch evaluation and checkpoint selection."""

    name: ClassVar[str] = "eval"
    folder: str = ""
    captions: str = ""
    every_steps: int = 0
    every_epochs: int = 0
    max_images: int | None = None
    images_to_log: int = 0


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
    """config.mesh: devices on the data axis (None: all)."""

    name: ClassVar[str] = "mesh"
    data: int | None = None


SECTIONS = {
    s.name: s
    for s in (TextConfig, LossConfig, OptimConfig, InputConfig, CkptConfig, EvalConfig, MeshConfig)
}
MODEL_KEYS = ("N", "M", "slices", "text_dim", "heads", "compute_dtype")


def known_keys() -> list[str]:
    """Every dotted key a config may hold."""
    keys = list(TOP_LEVEL) + [f"model.{k}" for k in MODEL_KEYS]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def check_keys(config) -> None:
    """Raises ConfigKeyError (one line, the closest known key) for a key no section declares."""
    known = set(known_keys())
    for key, value in upgrade(_items(config)).items():
        if key in SECTIONS or key == "model":
            for sub in _items(value):
                dotted = f"{key}.{sub}"
                if dotted not in known:
                    raise ConfigKeyError(closest(dotted, known))
        elif key not in TOP_LEVEL:
            raise ConfigKeyError(closest(key, known))


def upgrade(tree: dict) -> dict:
    """A config tree (an older run's config.json too) in today's names: renamed keys (the old
    name wins: only an older config or an explicit setting holds it), -1 as None. The one
    place either rule is applied."""
    tree = {k: dict(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
    for old, new in RENAMED.items():
        (sec, _, key), (_, _, new_key) = old.partition("."), new.partition(".")
        if isinstance(tree.get(sec), dict) and key in tree[sec]:
            tree[sec][new_key] = tree[sec].pop(key)
    for dotted in MINUS_ONE_IS_NONE:
        sec, _, key = dotted.rpartition(".")
        holder = tree.get(sec) if sec else tree
        if isinstance(holder, dict) and holder.get(key) == -1:
            holder[key] = None
    return tree


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The whole run's config, typed: the top-level keys and one dataclass per section."""

    text: TextConfig
    loss: LossConfig
    optim: OptimConfig
    input: InputConfig
    ckpt: CkptConfig
    eval: EvalConfig
    mesh: MeshConfig
    # config.model as given (plain values; ModelConfig.from_config, the model's own
    # interface, types it): the base layer knows its keys, not the model.
    model: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    total_steps: int | None = None  # None: epochs x steps per epoch
    train_time_limit_minutes: float = 0.0  # 0: none
    jax_default_matmul_precision: str | None = None
    log_every_steps: int = 100
    profile_steps: str = ""

    @classmethod
    def from_config(cls, config) -> RunConfig:
        """Every section typed (the model's stays a dict: ModelConfig takes it); a RunConfig
        is returned as it is, so a function may take either at its boundary."""
        if isinstance(config, cls):
            return config
        items = upgrade(_items(config))
        check_keys(items)
        top = {k: items[k] for k in TOP_LEVEL if k in items}
        sections = {n: s.from_config(items.get(n)) for n, s in SECTIONS.items()}
        model = {k: _plain(v) for k, v in _items(items.get("model")).items()}
        return cls(**sections, model=model, **top)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """A workdir's config.json (an older run's too: `upgrade`), its run record set aside."""
        tree = upgrade(json.loads(text))
        tree.pop(RUN_RECORD, None)
        return cls.from_config(tree)

    def to_dict(self) -> dict:
        """The config as JSON would hold it (tuples as lists), every key set."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# Top-level keys (not sections) with their defaults: RunConfig's own fields.
TOP_LEVEL = {
    f.name: f.default
    for f in dataclasses.fields(RunConfig)
    if f.name not in SECTIONS and f.name != "model"
}
