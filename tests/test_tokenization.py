"""Our tokenizers (Rust `tokenizers`) give transformers' ids on 1,200 varied captions.

The fixture (tools/make_tokenizer_fixture.py) holds transformers 4.57's and 5.x's ids and
masks at max_length 38 and 77 for the captions of `tokenizer_corpus`; the reference is 4.57's
slow tokenizers, the ones the towers used before. CLIP reads 8,000 merges of CLIP's real
BPE; BERT reads the cached MiniLM folder (skipped without it).
"""

import json
import unicodedata

import numpy as np
import pytest
from tokenizer_corpus import MAX_LENGTHS, captions, captions_sha256, write_clip_folder

from tgic_jax import minilm_fetch
from tgic_jax.model import tokenization

FIXTURE = "fixtures/tokenizers/transformers_ids.npz"


@pytest.fixture(scope="module")
def fixture():
    from pathlib import Path

    with np.load(Path(__file__).parent / FIXTURE) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays.pop("manifest")))
    texts = captions()
    assert manifest["captions_sha256"] == captions_sha256(texts) and len(texts) == 1200
    return manifest, arrays, texts


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {"clip": write_clip_folder(tmp_path_factory.mktemp("clip"))}
    minilm = minilm_fetch.cache_root() / "minilm"
    if (minilm / "vocab.txt").is_file():
        out["bert"] = minilm
    return out


def _ours(folders, tower, max_length):
    if tower not in folders:
        pytest.skip("MiniLM is not in the cache (tools/fetch_minilm.py)")
    build = tokenization.clip_tokenizer if tower == "clip" else tokenization.bert_tokenizer
    return build(folders[tower], max_length)


def _source_arrays(manifest, arrays, source, case):
    """A source's ids and masks: the reference with its differing rows put back."""
    entry = manifest["sources"][source][case]
    stored = entry.get("same_as", source)
    ids = arrays[f"{case}/ids"].astype(np.int32)
    lengths = arrays[f"{case}/lengths"].astype(np.int32)
    if entry["differs"]:
        rows = arrays[f"{stored}/{case}/rows"]
        ids[rows] = arrays[f"{stored}/{case}/ids"]
        lengths[rows] = arrays[f"{stored}/{case}/lengths"]
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    return ids, mask


def _assert_same(got, ids, mask, texts, label):
    bad = np.flatnonzero((got["input_ids"] != ids).any(1) | (got["attention_mask"] != mask).any(1))
    first = f"; first: caption {bad[0]} {texts[bad[0]]!r}" if bad.size else ""
    assert bad.size == 0, f"{label}: {bad.size} captions differ{first}"


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
@pytest.mark.parametrize("tower", ["clip", "bert"])
def test_ids_and_masks_equal_transformers_457_and_5x_where_they_agree(
    fixture, folders, tower, max_length
):
    manifest, arrays, texts = fixture
    got = _ours(folders, tower, max_length)(texts)
    assert got["input_ids"].dtype == np.int32 and got["input_ids"].shape == (1200, max_length)
    case = f"{tower}/{max_length}"
    agreeing = [
        s for s, cases in manifest["sources"].items() if cases.get(case, {}).get("differs", -1) == 0
    ]
    # The slow tokenizers of 4.57 (the reference) and, for BERT, 4.57's fast one and 5.x's.
    versions = {s.split()[1][0] for s in agreeing}
    assert versions == ({"4", "5"} if tower == "bert" else {"4"}), agreeing
    for source in agreeing:
        _assert_same(got, *_source_arrays(manifest, arrays, source, case), texts, source)
    # Truncation keeps the end token; the long captions are cut.
    lengths = got["attention_mask"].sum(1)
    assert (lengths == max_length).sum() > 50 and np.all(np.diff(got["attention_mask"]) <= 0)
    last = got["input_ids"][np.arange(1200), lengths - 1]
    assert np.all(last == got["input_ids"][0, lengths[0] - 1])


def _odd_character(text: str) -> bool:
    """CJK, a capital sigma, or a control, format or non-ASCII space character."""
    for ch in text:
        category = unicodedata.category(ch)
        if ch == "Σ" or "CJK" in unicodedata.name(ch, "") or "\u3040" <= ch <= "\u30ff":
            return True
        if category[0] == "C" or (category[0] == "Z" and ch != " "):
            return True
    return False


def test_fast_clip_tokenizers_differ_only_on_cjk_sigma_and_control_characters(fixture):
    # transformers' fast CLIP tokenizer (4.57's CLIPTokenizerFast, 5.x's CLIPTokenizer)
    # does not space CJK characters, drop control / zero-width ones, or lower a final sigma
    # as the slow one does. Ours keeps the slow one's ids: these rows are where they part.
    manifest, arrays, texts = fixture
    for max_length in MAX_LENGTHS:
        case = f"clip/{max_length}"
        rows = arrays[f"transformers 4.57.6 CLIPTokenizerFast/{case}/rows"]
        assert 100 < rows.size < 200
        plain = [texts[r] for r in rows if not _odd_character(texts[r])]
        assert len(plain) <= 1, plain  # "<|endoftext|>" written out in a caption


def test_ids_equal_the_installed_transformers_live(fixture, folders):
    transformers = pytest.importorskip("transformers")
    manifest, arrays, texts = fixture
    names = {"clip": "CLIPTokenizer", "bert": "BertTokenizer"}
    if transformers.__version__.startswith("5."):
        names["clip"] = None  # 5.x's CLIPTokenizer is the fast one (pinned by the fixture)
    for tower, name in names.items():
        if name is None or tower not in folders:
            continue
        theirs = getattr(transformers, name).from_pretrained(str(folders[tower]))
        for max_length in MAX_LENGTHS:
            want = theirs(texts, padding="max_length", max_length=max_length, truncation=True)
            ids = np.asarray(want["input_ids"], np.int32)
            mask = np.asarray(want["attention_mask"], np.int32)
            got = _ours(folders, tower, max_length)(texts)
            _assert_same(got, ids, mask, texts, f"{name} {transformers.__version__} live")


def test_clip_tokenizer_reads_a_tokenizer_json_folder_alike(tmp_path, fixture):
    # A folder with only tokenizer.json (the fast format) gives the same ids as vocab + merges.
    from tokenizers import Tokenizer, models

    _, _, texts = fixture
    folder = write_clip_folder(tmp_path / "bpe")
    model = models.BPE.from_file(
        str(folder / "vocab.json"), str(folder / "merges.txt"), end_of_word_suffix="</w>"
    )
    only_json = tmp_path / "json"
    only_json.mkdir()
    Tokenizer(model).save(str(only_json / "tokenizer.json"))
    a = tokenization.clip_tokenizer(folder, 38)(texts[:300])
    b = tokenization.clip_tokenizer(only_json, 38)(texts[:300])
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


@pytest.mark.parametrize("tower", ["clip", "bert"])
def test_count_gives_the_untruncated_length(fixture, folders, tower):
    # The compress command notes a truncated caption from this count.
    _, arrays, texts = fixture
    tokenizer = _ours(folders, tower, 38)
    counts = np.array([tokenizer.count(t) for t in texts])
    full = arrays[f"{tower}/77/lengths"].astype(int)  # 4.57's slow tokenizer, cut at 77
    np.testing.assert_array_equal(np.minimum(counts, 77), full)
    assert (counts > 77).sum() > 20 and tokenizer(texts[:1])["input_ids"].shape == (1, 38)
