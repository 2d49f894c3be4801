r"""Writes tests/fixtures/tokenizers/transformers_ids.npz: transformers' token ids of the
parity captions, for tests/test_tokenization.py (which needs neither transformers nor a
network then).

  python tools/make_tokenizer_fixture.py                  # transformers 4.57: the reference
  /tmp/venv-t5/bin/python tools/make_tokenizer_fixture.py  # transformers 5.x: adds its ids

Each run tokenizes `tests/tokenizer_corpus.captions()` (1,200) at max_length 38 and 77,
padded and truncated, with every CLIP and BERT tokenizer class of the installed transformers
(4.57: the slow `CLIPTokenizer` / `BertTokenizer` and the fast ones; 5.x: its
tokenizers-backed `CLIPTokenizer` / `BertTokenizer` and `BertTokenizerLegacy`). CLIP reads
the 8,000-merge CLIP folder of `tokenizer_corpus.write_clip_folder`; BERT reads the cached
MiniLM folder (`tools/fetch_minilm.py`). The first class run under 4.57, its slow tokenizer,
is the reference, stored whole (ids as uint16, masks as lengths: each mask is a prefix of
ones, checked here); every other class stores only the captions where it differs from it,
or names the class whose ids it repeats (`same_as`).
A 4.57 run starts the file anew; a 5.x run adds to it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tokenizer_corpus import (  # noqa: E402
    MAX_LENGTHS,
    captions,
    captions_sha256,
    write_clip_folder,
)

FIXTURE = REPO / "tests" / "fixtures" / "tokenizers" / "transformers_ids.npz"
MINILM_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def _classes():
    import transformers

    names = {"clip": ["CLIPTokenizer", "CLIPTokenizerFast"]}
    names["bert"] = ["BertTokenizer", "BertTokenizerFast", "BertTokenizerLegacy"]
    for tower, options in names.items():
        for name in options:
            cls = getattr(transformers, name, None)
            if cls is not None:
                yield tower, name, cls


def _tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    out = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True)
    ids = np.asarray(out["input_ids"], np.int64)
    mask = np.asarray(out["attention_mask"], np.int64)
    assert ids.shape == (len(texts), max_length) and ids.max() < 2**16
    lengths = mask.sum(axis=1)
    assert np.array_equal(mask, np.arange(max_length)[None, :] < lengths[:, None])
    return ids.astype(np.uint16), lengths.astype(np.uint16)


def _minilm_folder() -> Path:
    """The cached MiniLM folder (tgic_jax.minilm_fetch's place; no tgic_jax import here)."""
    import os

    root = os.environ.get("TGIC_CACHE")
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "tgic_jax"
    return root / "minilm"


def main() -> None:
    """Tokenizes with every class of the installed transformers and updates the fixture."""
    import transformers

    texts = captions()
    version = transformers.__version__
    reference_run = version.startswith("4.")
    arrays: dict[str, np.ndarray] = {}
    manifest = {"captions_sha256": captions_sha256(texts), "n": len(texts), "sources": {}}
    if not reference_run:
        with np.load(FIXTURE) as old:
            arrays = {k: old[k] for k in old.files if k != "manifest"}
            manifest = json.loads(str(old["manifest"]))
        assert manifest["captions_sha256"] == captions_sha256(texts), "captions changed: rerun 4.57"
        mine = f"transformers {version} "  # a rerun of this version replaces its entries
        manifest["sources"] = {k: v for k, v in manifest["sources"].items() if mine not in k}
        arrays = {k: v for k, v in arrays.items() if not k.startswith(mine)}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"clip": write_clip_folder(Path(tmp) / "clip"), "bert": Path(tmp) / "bert"}
        folders["bert"].mkdir()
        for name in MINILM_FILES:
            shutil.copy(_minilm_folder() / name, folders["bert"] / name)
        for tower, name, cls in _classes():
            source = f"transformers {version} {name}"
            tokenizer = cls.from_pretrained(str(folders[tower]))
            entry = manifest["sources"].setdefault(source, {})
            for max_length in MAX_LENGTHS:
                case = f"{tower}/{max_length}"
                ids, lengths = _tokenize(tokenizer, texts, max_length)
                if f"{case}/ids" not in arrays:  # the first class run is the reference
                    assert reference_run
                    arrays[f"{case}/ids"], arrays[f"{case}/lengths"] = ids, lengths
                    manifest.setdefault("reference", {})[case] = source
                rows = np.flatnonzero(
                    (ids != arrays[f"{case}/ids"]).any(axis=1)
                    | (lengths != arrays[f"{case}/lengths"])
                )
                entry[case] = {"differs": int(rows.size)}
                same = [
                    other
                    for other, cases in manifest["sources"].items()
                    if other != source
                    and rows.size
                    and cases.get(case, {}).get("differs") == rows.size
                    and "same_as" not in cases[case]
                    and np.array_equal(arrays[f"{other}/{case}/rows"], rows)
                    and np.array_equal(arrays[f"{other}/{case}/ids"], ids[rows])
                    and np.array_equal(arrays[f"{other}/{case}/lengths"], lengths[rows])
                ]
                if same:  # stored once, under the first source that gave these ids
                    entry[case]["same_as"] = same[0]
                elif rows.size:
                    arrays[f"{source}/{case}/rows"] = rows.astype(np.uint16)
                    arrays[f"{source}/{case}/ids"] = ids[rows]
                    arrays[f"{source}/{case}/lengths"] = lengths[rows]
                print(f"{source:45s} {case:8s} differs from the reference on {rows.size} captions")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, manifest=np.array(json.dumps(manifest, indent=1)), **arrays)
    print(f"{FIXTURE}: {FIXTURE.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
